// Name maps: the shipped open-muse, taming and CLIP maps against a checkpoint written in those namings
// (Fixtures/openmuse, from Tools/make_fixtures.py: the inverse of diffusers' convert_amused.py, cross-checked by
// running that script's renaming), and the ledger's error cases.

import AmusedBind
import AmusedCore
import AmusedMap
import AmusedModel
import AmusedRead
import AmusedTestSupport
import AmusedVerify
import Testing

@Suite("name maps")
struct NameMapTests {
    /// The open-muse checkpoint (PyTorch .bin files, open-muse and taming names and configs, CLIP without its
    /// text_model. prefix and with position_ids) passes every case of the record made from the diffusers-named
    /// model, pipelines included (the map's operations are exact; tolerances as in the fp32 profile).
    @Test func openMuseCheckpointVerifiesAgainstTheDiffusersRecord() throws {
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-512"))
        let report = try Verifier(
            record: record, modelPath: FixturePaths.path("openmuse/tiny-512"),
            profile: try ToleranceProfile.load("fp32")
        ).run()
        #expect(
            report.cases.allSatisfy { $0.status == .pass }, "\(report.cases.filter { $0.status != .pass }.map(\.name))")
    }

    /// Every source tensor is accounted for: the GEGLU halves concatenated, position_ids dropped, nothing unmapped.
    @Test func ledgerAccountsForEveryTensor() throws {
        let components = try AmusedComponents(path: FixturePaths.path("openmuse/tiny-512"))
        let transformer = try #require(components.ledgers["transformer"])
        #expect(transformer.unmapped.isEmpty)
        let layers = components.transformer!.config.numHiddenLayers
        #expect(transformer.counts["transformed"] == 2 * layers)  // wi_1 + wi_0 per layer
        #expect(
            transformer.entries.contains {
                $0.targets == ["transformer_layers.0.ff.net.0.proj.weight"]
                    && $0.sources == ["transformer_layers.0.ffn.wi_1.weight", "transformer_layers.0.ffn.wi_0.weight"]
            })
        let text = try #require(components.ledgers["text_encoder"])
        #expect(text.counts["dropped"] == 1)
        #expect(text.entries.contains { $0.kind == .dropped && $0.sources == ["embeddings.position_ids"] })
        let vq = try #require(components.ledgers["vae"])
        // The decoder's block index is reversed: taming's decoder.up.0 is diffusers' last up block.
        #expect(
            vq.entries.contains {
                $0.sources.first?.hasPrefix("decoder.up.0.block.0.") == true
                    && $0.targets.first?.hasPrefix("decoder.up_blocks.2.resnets.0.") == true
            })
    }

    func openMuseTransformer() throws -> [(name: String, tensor: Tensor)] {
        let source = try PyTorchCheckpoint(path: FixturePaths.path("openmuse/tiny-512/transformer/pytorch_model.bin"))
        return try source.names.map { ($0, try source.tensor(named: $0)) }
    }

    @Test func unknownNameIsAnError() throws {
        var tensors = try openMuseTransformer()
        tensors.append(("transformer_layers.0.mystery.weight", try Tensor(floats: [1], shape: [1])))
        let error = try #require(throws: MapError.self) {
            try MappedSource(InMemoryTensors(tensors), map: try NameMap.shipped("open-muse-transformer"))
        }
        #expect(error.subject == "transformer_layers.0.mystery.weight")
        // …unless explicitly allowed, and then the ledger lists it.
        let lenient = try MappedSource(
            InMemoryTensors(tensors), map: try NameMap.shipped("open-muse-transformer"),
            allowUnmapped: true)
        #expect(lenient.ledger.unmapped == ["transformer_layers.0.mystery.weight"])
    }

    @Test func missingConcatPartnerIsAnError() throws {
        let tensors = try openMuseTransformer().filter { $0.name != "transformer_layers.1.ffn.wi_0.weight" }
        let error = try #require(throws: MapError.self) {
            try MappedSource(InMemoryTensors(tensors), map: try NameMap.shipped("open-muse-transformer"))
        }
        #expect(error.subject == "transformer_layers.1.ffn.wi_0.weight")
    }

    @Test func shapeThatDoesNotFitIsAnError() throws {
        var tensors = try openMuseTransformer()
        let i = tensors.firstIndex { $0.name == "transformer_layers.0.ffn.wi_0.weight" }!
        tensors[i].tensor = try Tensor(floats: [Float](repeating: 0, count: 6), shape: [2, 3])
        #expect(throws: MapError.self) {
            try MappedSource(InMemoryTensors(tensors), map: try NameMap.shipped("open-muse-transformer"))
        }
    }

    /// A graph parameter no source provides is caught by binding, named.
    @Test func missingParameterIsNamedByBind() throws {
        let tensors = try openMuseTransformer().filter { $0.name != "mlm_layer.conv2.weight" }
        let view = try MappedSource(InMemoryTensors(tensors), map: try NameMap.shipped("open-muse-transformer"))
        let config = try UVit2DConfig(
            openMuse: Checkpoint.readJSON(FixturePaths.path("openmuse/tiny-512/transformer/config.json")),
            path: "config.json")
        let error = try #require(throws: BindError.self) { try bind(view, to: UVit2DModel.parameterSpecs(config)) }
        #expect(error.key == "mlm_layer.conv2.weight")
    }

    /// reshape and squeeze: a checkpoint that stores the 1×1 convolutions of the MLM head as Linear matrices and one
    /// projection with a stray unit axis maps back onto the graph; every bound tensor equals diffusers' own file.
    @Test func reshapeAndSqueezeRestoreTheGraphShapes() throws {
        let original = try SafetensorsFile(
            path: FixturePaths.path("records/tiny-256/model/transformer/diffusion_pytorch_model.safetensors"))
        let conv = try original.tensor(named: "mlm_layer.conv1.weight").contiguous()
        let proj = try original.tensor(named: "encoder_proj.weight").contiguous()
        var tensors: [(name: String, tensor: Tensor)] = []
        for name in original.names {
            let t = try original.tensor(named: name).contiguous()
            switch name {
            case "mlm_layer.conv1.weight": tensors.append((name, try t.reshaped([conv.shape[0], conv.shape[1]])))
            case "encoder_proj.weight": tensors.append((name, try t.reshaped(proj.shape + [1])))
            default: tensors.append((name, t))
            }
        }
        let json = """
            {"format": "amused-name-map", "version": 1, "name": "linear-1x1", "component": "transformer", "rules": [
              {"op": "reshape", "from": "mlm_layer.conv1.weight", "to": "mlm_layer.conv1.weight", "shape": [-1, \(conv.shape[1]), 1, 1]},
              {"op": "squeeze", "from": "encoder_proj.weight", "to": "encoder_proj.weight", "axis": 2},
              {"from": "{*}", "to": "{*}"}]}
            """
        let map = try NameMap(json: StrictJSONParser(path: "map").parse(Array(json.utf8)), source: "linear-1x1")
        let view = try MappedSource(InMemoryTensors(tensors), map: map)
        #expect(view.ledger.counts["transformed"] == 2)
        let config = try UVit2DConfig(
            json: Checkpoint.readJSON(FixturePaths.path("records/tiny-256/model/transformer/config.json")),
            path: "config.json")
        let bound = try bind(view, to: UVit2DModel.parameterSpecs(config))
        for name in original.names {
            let ours = try #require(bound.weights.tensors[name])
            #expect(ours.shape == original.infos.first { $0.name == name }!.shape, "\(name)")
            #expect(try ours.floats() == original.tensor(named: name).floats(), "\(name)")
        }
        // A reshape that cannot hold the data, and a squeeze of an axis that is not 1, are refused naming the tensor.
        for (rule, subject) in [
            (#"{"op": "reshape", "from": "encoder_proj.weight", "to": "x", "shape": [7, -1]}"#, "encoder_proj.weight"),
            (#"{"op": "squeeze", "from": "encoder_proj.weight", "to": "x", "axis": 0}"#, "encoder_proj.weight"),
        ] {
            let head =
                #"{"format": "amused-name-map", "version": 1, "name": "bad", "component": "transformer", "rules": ["#
            let text = head + rule + #", {"from": "{*}", "to": "{*}"}]}"#
            let bad = try NameMap(json: StrictJSONParser(path: "map").parse(Array(text.utf8)), source: "bad")
            let error = try #require(throws: MapError.self) { try MappedSource(InMemoryTensors(tensors), map: bad) }
            #expect(error.subject == subject)
        }
    }

    @Test func mapsValidate() throws {
        for name in ["open-muse-transformer", "taming-vqgan", "clip-text", "diffusers-transformer", "diffusers-vqvae"] {
            let map = try NameMap.shipped(name)
            #expect(!map.rules.isEmpty)
        }
    }
}
