// Each component of the Swift graph against the PyTorch reference records (Fixtures/records, made by
// Tools/make_fixtures.py with torch 2.9.1 / diffusers 0.35.2 / transformers 4.57.1 on one CPU thread).

import AmusedBind
import AmusedModel
import AmusedRead
import AmusedTestSupport
import AmusedVerify
import Foundation
import Testing

/// The tiny random-weight records, and the record of the trained default model (Fixtures/models/shapes-64, recorded by
/// Tools/record.py --cases full): every case kind on weights that draw something.
let allRecords = FixturePaths.records + ["tiny-variant", "shapes-64"]

@Suite("component parity")
struct ComponentParityTests {
    /// Every component case of every committed record passes the fp32 profile. The thresholds, and why each has
    /// its value, are in Sources/6-Verify/tolerance-profiles.json: 1e-4 absolute for text features and pixels,
    /// 1e-4 of the largest logit (and cosine ≥ 0.99999) for the transformer, identical ids for the VQ encoder.
    @Test(arguments: allRecords)
    func recordPasses(_ name: String) throws {
        let record = try ReferenceRecord(path: FixturePaths.path("records/\(name)"))
        let report = try Verifier(record: record, profile: try ToleranceProfile.load("fp32")).run()
        let ran = report.cases.filter { $0.status != .skipped }
        #expect(ran.count == record.cases.count, "every case kind of the record is checked, none skipped")
        #expect(Set(ran.map(\.kind)).isSuperset(of: ["text_encoder", "transformer", "vq_decode", "vq_encode"]))
        for c in ran {
            #expect(c.status == .pass, "\(name)/\(c.name): \(c.note ?? "")")
            for m in c.metrics where m.agreement == nil && !m.tensor.hasSuffix("/image") || c.kind.hasPrefix("vq") {
                guard m.agreement == nil else { continue }
                // Independently of the profile file: float32 summation-order noise stays far below these bounds.
                #expect(m.maxAbs <= 1e-4 * max(1, m.maxReference), "\(m.tensor): \(m.maxAbs)")
                #expect(m.cosine >= 0.99999, "\(m.tensor)")
            }
            if ["text_to_image", "image_to_image", "inpaint"].contains(c.kind) {
                // Seed for seed: identical tokens after every step, then pixels within one uint8 level (a decoder
                // output sitting on a rounding boundary can round the other way; nothing else may differ).
                #expect(c.firstDivergingStep == nil, "\(name)/\(c.name): \(c.note ?? "")")
                #expect(c.tokenAgreementPerStep?.allSatisfy { $0 == 1 } == true)
                let image = try #require(c.metrics.first { $0.tensor.hasSuffix("/image") })
                #expect(image.maxAbs <= 1, "\(c.name): \(image.maxAbs) levels")
            }
            for m in c.metrics where m.agreement != nil { #expect(m.agreement == 1, "\(m.tensor)") }
        }
        #expect(report.pass)
    }

    /// Without a trace the text encoder computes its last layer at the pooled rows only; with one it computes every
    /// row, so that the trace holds the whole layer. Both paths give transformers' text_embeds within the fp32 profile.
    @Test(arguments: ["tiny-256", "tiny-variant", "shapes-64"])
    func textEncoderPathsBothMatch(_ name: String) throws {
        let record = try ReferenceRecord(path: FixturePaths.path("records/\(name)"))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("amused-trace-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let profile = try ToleranceProfile.load("fp32")
        let cases = record.cases.filter { $0.kind == "text_encoder" }
        #expect(!cases.isEmpty)
        for c in cases {
            for verifier in [
                try Verifier(record: record, profile: profile),
                try Verifier(record: record, profile: profile, traceFolder: folder),
            ] {
                let result = try verifier.check(c)
                #expect(result.status == .pass, "\(name)/\(c.name), trace \(verifier.traceFolder != nil)")
                #expect(result.metrics.contains { $0.tensor.hasSuffix("/text_embeds") })
            }
            #expect(FileManager.default.fileExists(atPath: "\(folder)/\(c.name).swift.safetensors"))
        }
    }

    /// The text encoder pools at argmax(input_ids) for the legacy eos_token_id 2 and at the first
    /// <|endoftext|> otherwise; tiny-256 uses the first, tiny-variant the second. Both agree with transformers.
    @Test func poolingRuleFollowsTheConfig() throws {
        for (name, eos) in [("tiny-256", 2), ("tiny-variant", 49407)] {
            let components = try AmusedComponents(path: FixturePaths.path("records/\(name)/model"))
            #expect(components.textEncoder?.config.eosTokenId == eos)
        }
    }
}

@Suite("parameter lists")
struct ParameterListTests {
    /// The graph lists, from a config alone, exactly the parameters (names and shapes) diffusers and transformers
    /// instantiate for it, including the released amused-256/512 configs (Fixtures/keys/parameter-lists.json).
    @Test func graphListsWhatTheReferenceInstantiates() throws {
        let lists = try #require(FixturePaths.json("keys/parameter-lists.json")["configs"]?.arrayValue)
        #expect(lists.count >= 10)
        for entry in lists {
            let name = entry["name"]!.stringValue!
            let config = entry["config"]
            let specs: [ParameterSpec]
            switch entry["class"]!.stringValue! {
            case "UVit2DModel": specs = try UVit2DModel.parameterSpecs(UVit2DConfig(json: config, path: name))
            case "VQModel": specs = try VQModel.parameterSpecs(VQModelConfig(json: config, path: name))
            default: specs = try CLIPTextModel.parameterSpecs(CLIPTextConfig(json: config, path: name))
            }
            let expected = entry["keys"]!.arrayValue!.map { pair in
                (pair.arrayValue![0].stringValue!, pair.arrayValue![1].arrayValue!.map { $0.intValue! })
            }
            let ours = Dictionary(uniqueKeysWithValues: specs.map { ($0.key, $0.shape) })
            let theirs = Dictionary(uniqueKeysWithValues: expected.map { ($0.0, $0.1) })
            #expect(ours.count == specs.count, "\(name): duplicate keys")
            #expect(
                Set(ours.keys) == Set(theirs.keys),
                "\(name): \(Set(ours.keys).symmetricDifference(theirs.keys).sorted().prefix(5))")
            for (key, shape) in theirs { #expect(ours[key] == shape, "\(name): \(key)") }
        }
    }
}
