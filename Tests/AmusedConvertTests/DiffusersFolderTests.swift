// Importing a checkpoint folder as a diffusers folder (`amused convert FOLDER --out DIR`). The reference is diffusers
// itself: Fixtures/openmuse/tiny-512 was written from Fixtures/records/tiny-512/model by the inverse of diffusers'
// convert_amused.py, so importing it must give back what diffusers' save_pretrained wrote, byte for byte.

import AmusedBind
import AmusedConvert
import AmusedCore
import AmusedModel
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("import to diffusers")
struct DiffusersFolderTests {
    static let diffusers = FixturePaths.path("records/tiny-512/model")

    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @Test func openMuseImportEqualsDiffusersSavePretrained() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/imported"
        let report = try DiffusersExport.write(try Checkpoint(path: FixturePaths.path("openmuse/tiny-512")), to: out)
        #expect(report.layout == .openMuse && report.written == ["transformer": 122, "vqvae": 133, "text_encoder": 37])
        for file in [
            "transformer/diffusion_pytorch_model.safetensors", "vqvae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "text_encoder/config.json", "tokenizer/vocab.json",
            "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
            "model_index.json", "scheduler/scheduler_config.json", "vqvae/config.json",
        ] {
            #expect(try Self.bytes(out + "/" + file) == Self.bytes(Self.diffusers + "/" + file), "\(file)")
        }
        // The transformer config equals diffusers' in every key but sample_size, which open-muse configs do not
        // carry: convert_amused.py sets 32 for force_down_up_sample (512) checkpoints; the tiny fixture's own
        // diffusers config says 16.
        let ours = try Checkpoint.readJSON(out + "/transformer/config.json").objectValue!
        let theirs = try Checkpoint.readJSON(Self.diffusers + "/transformer/config.json").objectValue!
        #expect(ours.entries.map(\.key) == theirs.entries.map(\.key))
        for (key, value) in theirs.entries where key != "sample_size" { #expect(ours[key] == value, "\(key)") }
        #expect(ours["sample_size"]?.intValue == 32)
        // The report records the ledger, and nothing was allowed.
        let json = try Checkpoint.readJSON(out + "/amused-import.json")
        #expect(json["allow_unmapped"]?.boolValue == false && json["layout"]?.stringValue == "open-muse")
        #expect(try AmusedComponents(path: out).transformer != nil)
    }

    /// A copy of the diffusers tiny-256 transformer folder with its tensors edited.
    static func editedTransformer(
        _ scratch: ScratchFolder,
        _ edit: ([(name: String, tensor: Tensor)]) throws -> [(name: String, tensor: Tensor)]
    ) throws -> String {
        let folder = scratch.path + "/transformer"
        try FileManager.default.copyItem(
            atPath: FixturePaths.path("records/tiny-256/model/transformer"), toPath: folder)
        let path = folder + "/diffusion_pytorch_model.safetensors"
        let file = try SafetensorsFile(path: path)
        let tensors = try edit(try file.names.map { ($0, try file.tensor(named: $0).contiguous()) })
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path)
        return folder
    }

    /// An unknown tensor stops the import, naming it, and leaves nothing behind; with allowUnmapped it is left out
    /// and recorded, and the rest is written unchanged.
    @Test func unmappedTensorIsAnErrorUnlessAllowed() throws {
        let scratch = try ScratchFolder()
        let folder = try Self.editedTransformer(scratch) {
            $0 + [("transformer_layers.0.attn1.rotary.weight", try Tensor(floats: [1, 2], shape: [2]))]
        }
        let out = scratch.path + "/out"
        #expect {
            try DiffusersExport.write(try Checkpoint(path: folder), to: out)
        } throws: { error in
            let e = error as? BindError
            return e?.kind == .unused && e?.key == "transformer_layers.0.attn1.rotary.weight"
                && e?.message.contains("--allow-unmapped") == true
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["transformer"])

        let report = try DiffusersExport.write(try Checkpoint(path: folder), to: out, allowUnmapped: true)
        #expect(report.plans[0].unmapped == ["transformer_layers.0.attn1.rotary.weight"])
        #expect(
            try Self.bytes(out + "/transformer/diffusion_pytorch_model.safetensors")
                == Self.bytes(
                    FixturePaths.path("records/tiny-256/model/transformer/diffusion_pytorch_model.safetensors")))
        let json = try Checkpoint.readJSON(out + "/amused-import.json")
        #expect(json["allow_unmapped"]?.boolValue == true)
        #expect(
            json["components"]?.arrayValue?.first?["unmapped_left_out"]?.arrayValue?.first?.stringValue
                == "transformer_layers.0.attn1.rotary.weight")
        // An existing output folder is never overwritten.
        #expect(throws: ConvertError.self) {
            try DiffusersExport.write(try Checkpoint(path: folder), to: out, allowUnmapped: true)
        }
    }

    /// A missing parameter is an error naming the key unless allowed (and then recorded); a shape that does not fit
    /// is always an error.
    @Test func missingAndMisshapenAreErrors() throws {
        let scratch = try ScratchFolder()
        let missing = try Self.editedTransformer(scratch) { $0.filter { $0.name != "mlm_layer.conv2.weight" } }
        #expect { try CheckpointImport.check(try Checkpoint(path: missing), allowUnmapped: true) } throws: { error in
            (error as? BindError)?.kind == .missing && (error as? BindError)?.key == "mlm_layer.conv2.weight"
        }
        // Explicitly allowed, the folder is written without it and the report says so.
        let out = scratch.path + "/out"
        let report = try DiffusersExport.write(try Checkpoint(path: missing), to: out, allowMissing: true)
        #expect(report.plans[0].missing.map(\.key) == ["mlm_layer.conv2.weight"])
        let json = try Checkpoint.readJSON(out + "/amused-import.json")
        #expect(json["allow_missing"]?.boolValue == true)
        #expect(
            json["components"]?.arrayValue?.first?["missing"]?.arrayValue?.first?.stringValue
                == "mlm_layer.conv2.weight")
        let other = try ScratchFolder()
        let misshapen = try Self.editedTransformer(other) { tensors in
            try tensors.map {
                $0.name == "encoder_proj.weight" ? ($0.name, try Tensor(floats: [0, 0], shape: [1, 2])) : $0
            }
        }
        #expect { try CheckpointImport.check(try Checkpoint(path: misshapen)) } throws: { error in
            (error as? BindError)?.kind == .shape && (error as? BindError)?.key == "encoder_proj.weight"
        }
    }
}
