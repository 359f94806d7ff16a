// Strict binding: a tensor missing, an extra tensor, or a wrong shape is an error that names the key.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("strict binding")
struct BindTests {
    let folder = FixturePaths.path("records/tiny-256/model/transformer")

    /// Writes the tiny transformer's tensors, edited by `edit`, to a scratch file and binds it.
    func bindEdited(_ edit: (inout [(name: String, tensor: Tensor)]) throws -> Void) throws -> BindError? {
        let file = try SafetensorsFile(path: folder + "/diffusion_pytorch_model.safetensors")
        var tensors: [(name: String, tensor: Tensor)] = try file.names.map { ($0, try file.tensor(named: $0)) }
        try edit(&tensors)
        let scratch = try ScratchFolder()
        let path = scratch.path + "/edited.safetensors"
        try SafetensorsWriter.write(tensors, to: path)
        let config = try UVit2DConfig(json: Checkpoint.readJSON(folder + "/config.json"), path: "config.json")
        do {
            _ = try bind(SafetensorsFile(path: path), to: UVit2DModel.parameterSpecs(config))
            return nil
        } catch let error as BindError {
            return error
        }
    }

    @Test func unchangedBinds() throws {
        #expect(try bindEdited { _ in } == nil)
    }

    @Test func missingTensorIsNamed() throws {
        let error = try #require(try bindEdited { $0.removeAll { $0.name == "mlm_layer.conv2.weight" } })
        #expect(error.kind == .missing)
        #expect(error.key == "mlm_layer.conv2.weight")
    }

    @Test func unusedTensorIsNamed() throws {
        let error = try #require(
            try bindEdited { $0.append(("transformer_layers.9.extra.weight", try Tensor(floats: [1], shape: [1]))) })
        #expect(error.kind == .unused)
        #expect(error.key == "transformer_layers.9.extra.weight")
    }

    @Test func wrongShapeIsNamed() throws {
        let error = try #require(
            try bindEdited { tensors in
                let i = tensors.firstIndex { $0.name == "encoder_proj.weight" }!
                tensors[i].tensor = try tensors[i].tensor.reshaped([tensors[i].tensor.elementCount])
            })
        #expect(error.kind == .shape)
        #expect(error.key == "encoder_proj.weight")
        #expect(error.errorDescription!.contains("[32, 16]"))
    }

    /// float16 weights are widened to float32 on binding; float32 weights stay views of the mapped file.
    @Test func float32IsZeroCopyAndHalfIsWidened() throws {
        let file = try SafetensorsFile(path: folder + "/diffusion_pytorch_model.safetensors")
        let config = try UVit2DConfig(json: Checkpoint.readJSON(folder + "/config.json"), path: "config.json")
        let specs = try UVit2DModel.parameterSpecs(config)
        let bound = try bind(file, to: specs)
        #expect(bound.zeroCopy == specs.count)
        let scratch = try ScratchFolder()
        let half = try file.names.map { ($0, try file.tensor(named: $0).converted(to: .f16)) }
        try SafetensorsWriter.write(half, to: scratch.path + "/half.safetensors")
        let widened = try bind(SafetensorsFile(path: scratch.path + "/half.safetensors"), to: specs)
        #expect(widened.zeroCopy == 0)
        #expect(widened.weights.tensors.values.allSatisfy { $0.dtype == .f32 })
    }

    @Test func unsupportedConfigValueIsNamed() throws {
        var object = try #require(
            Checkpoint.readJSON(FixturePaths.path("records/tiny-256/model/vqvae/config.json")).objectValue)
        var copy = JSONObject()
        for (k, v) in object.entries { copy.insert(k, k == "act_fn" ? .string("relu") : v) }
        object = copy
        let error = try #require(throws: BindError.self) {
            try VQModelConfig(json: .object(object), path: "config.json")
        }
        #expect(error.key == "act_fn")
    }

    /// The scheduler config's masking schedule reaches the pipeline (tiny-variant's is linear, as diffusers ran it for
    /// its record); one diffusers' AmusedScheduler does not know is refused at load, naming the file and the key.
    @Test func maskingScheduleComesFromTheSchedulerConfig() throws {
        #expect(try AmusedComponents(path: FixturePaths.path("records/tiny-256/model")).maskingSchedule == .cosine)
        let variant = try AmusedComponents(path: FixturePaths.path("records/tiny-variant/model"))
        #expect(variant.maskingSchedule == .linear)
        #expect(try AmusedPipeline(components: variant).maskingSchedule == .linear)

        let scratch = try ScratchFolder()
        let model = scratch.path + "/model"
        try FileManager.default.copyItem(atPath: FixturePaths.path("records/tiny-variant/model"), toPath: model)
        let config = model + "/scheduler/scheduler_config.json"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "\"linear\"", with: "\"sigmoid\"").write(
            toFile: config, atomically: true,
            encoding: .utf8)
        let error = try #require(throws: BindError.self) { try AmusedComponents(path: model) }
        #expect(error.key == "masking_schedule")
        #expect(error.path.hasSuffix("scheduler/scheduler_config.json"))
        #expect(error.localizedDescription.contains("sigmoid"))
    }

    /// The trained default recommends its sampling settings in model_index.json (`_amused_defaults`, written by
    /// Tools/train_default.py); a model without them recommends none; a broken value is refused naming the key.
    @Test func samplingDefaultsComeFromModelIndex() throws {
        let trained = try AmusedComponents(path: FixturePaths.path("models/shapes-64"), only: [.tokenizer])
        let index = try FixturePaths.json("models/shapes-64/model_index.json")
        let expected = try #require(index["_amused_defaults"])
        #expect(trained.samplingDefaults?.steps == expected["steps"]?.intValue)
        #expect(trained.samplingDefaults?.guidance == expected["guidance"]?.doubleValue.map(Float.init))
        #expect(
            try AmusedComponents(path: FixturePaths.path("records/tiny-256/model"), only: [.tokenizer])
                .samplingDefaults == nil)

        for (bad, key) in [
            (#"{"steps": 0}"#, "_amused_defaults.steps"), (#"{"guidance": 1e400}"#, "_amused_defaults.guidance"),
            (#"{"temperature": 2}"#, "_amused_defaults.temperature"), (#"[12]"#, "_amused_defaults"),
        ] {
            let scratch = try ScratchFolder()
            let model = scratch.path + "/model"
            try FileManager.default.copyItem(atPath: FixturePaths.path("records/tiny-256/model"), toPath: model)
            var object = try FixturePaths.json("records/tiny-256/model/model_index.json").objectValue!
            object.set("_amused_defaults", try StrictJSONParser(path: "test").parse(Array(bad.utf8)))
            try JSONValue.object(object).serialized.write(
                toFile: model + "/model_index.json", atomically: true,
                encoding: .utf8)
            let error = try #require(throws: BindError.self) { try AmusedComponents(path: model, only: [.tokenizer]) }
            #expect(error.key == key, "\(bad)")
            #expect(error.path.hasSuffix("model_index.json"))
        }
    }

    /// A pipeline needs every component; asking for one from a part of a checkpoint names what is missing.
    @Test func pipelineNamesMissingComponents() throws {
        let textOnly = try AmusedComponents(
            path: FixturePaths.path("records/tiny-256/model"), only: [.textEncoder, .tokenizer])
        let error = try #require(throws: BindError.self) { try AmusedPipeline(components: textOnly) }
        #expect(error.message.contains("transformer, vqvae"))
    }
}
