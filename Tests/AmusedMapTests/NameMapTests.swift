// Name maps: the shipped open-muse, taming and CLIP maps against a checkpoint written in those namings
// (Fixtures/openmuse, from Tools/make_fixtures.py: the inverse of diffusers' convert_amused.py, cross-checked by
// running that script's renaming), and the ledger's error cases.

import AmusedBind
import AmusedMap
import AmusedModel
import AmusedRead
import AmusedTensors
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
        let report = try Verifier(record: record, modelPath: FixturePaths.path("openmuse/tiny-512"),
                                  profile: try ToleranceProfile.load("fp32")).run()
        #expect(report.cases.allSatisfy { $0.status == .pass }, "\(report.cases.filter { $0.status != .pass }.map(\.name))")
    }

    /// Every source tensor is accounted for: the GEGLU halves concatenated, position_ids dropped, nothing unmapped.
    @Test func ledgerAccountsForEveryTensor() throws {
        let components = try AmusedComponents(path: FixturePaths.path("openmuse/tiny-512"))
        let transformer = try #require(components.ledgers["transformer"])
        #expect(transformer.unmapped.isEmpty)
        let layers = components.transformer!.config.numHiddenLayers
        #expect(transformer.counts["transformed"] == 2 * layers)  // wi_1 + wi_0 per layer
        #expect(transformer.entries.contains { $0.targets == ["transformer_layers.0.ff.net.0.proj.weight"]
            && $0.sources == ["transformer_layers.0.ffn.wi_1.weight", "transformer_layers.0.ffn.wi_0.weight"] })
        let text = try #require(components.ledgers["text_encoder"])
        #expect(text.counts["dropped"] == 1)
        #expect(text.entries.contains { $0.kind == .dropped && $0.sources == ["embeddings.position_ids"] })
        let vq = try #require(components.ledgers["vae"])
        // The decoder's block index is reversed: taming's decoder.up.0 is diffusers' last up block.
        #expect(vq.entries.contains { $0.sources.first?.hasPrefix("decoder.up.0.block.0.") == true
            && $0.targets.first?.hasPrefix("decoder.up_blocks.2.resnets.0.") == true })
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
        let lenient = try MappedSource(InMemoryTensors(tensors), map: try NameMap.shipped("open-muse-transformer"),
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
        let config = try UVit2DConfig(openMuse: Checkpoint.readJSON(FixturePaths.path("openmuse/tiny-512/transformer/config.json")),
                                      path: "config.json")
        let error = try #require(throws: BindError.self) { try bind(view, to: UVit2DModel.parameterSpecs(config)) }
        #expect(error.key == "mlm_layer.conv2.weight")
    }

    @Test func mapsValidate() throws {
        for name in ["open-muse-transformer", "taming-vqgan", "clip-text"] {
            let map = try NameMap.shipped(name)
            #expect(!map.rules.isEmpty)
        }
    }
}
