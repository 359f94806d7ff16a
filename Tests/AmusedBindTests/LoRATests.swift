// LoRA fusion against diffusers: Fixtures/lora/tiny-256 holds a PEFT LoRA (r = 4 on the transformer's
// to_q/to_k/to_v, r = 2 on CLIP's q/k/v_proj, B drawn non-zero) saved the way train_amused.py saves it, and records
// of diffusers with that file loaded at scales 1.0 and 0.5 (Tools/make_fixtures.py). Tolerances are the fp32
// profile's: fusing W + s·B·A and PEFT's x·Wᵀ + s·(x·Aᵀ)·Bᵀ differ only in float32 rounding.

import AmusedBind
import AmusedConvert
import AmusedCore
import AmusedModel
import AmusedRead
import AmusedTestSupport
import AmusedVerify
import Foundation
import Testing

@Suite("LoRA")
struct LoRATests {
    static let file = FixturePaths.path("lora/tiny-256/pytorch_lora_weights.safetensors")

    static func verify(record scale: String, lora: LoRA?, at s: Float) throws -> VerifyReport {
        let record = try ReferenceRecord(path: FixturePaths.path("lora/tiny-256/scale-\(scale)"))
        return try Verifier(
            record: record, profile: try ToleranceProfile.load("fp32"),
            lora: lora.map { LoRAFusion($0, scale: s) }
        ).run()
    }

    static func failing(_ report: VerifyReport) -> [String] {
        report.cases.filter { $0.status != .pass }.map(\.name)
    }

    /// Text encoder, transformer and a 12-step guided generation match diffusers with the LoRA loaded, at each scale.
    @Test(arguments: [("1.0", Float(1)), ("0.5", Float(0.5))])
    func fusedLoRAMatchesDiffusers(_ record: String, _ scale: Float) throws {
        let lora = try LoRA(path: Self.file)
        #expect(lora.pairs["transformer"]?.count == 36 && lora.pairs["text_encoder"]?.count == 6)
        #expect(lora.ranks == [2, 4] && !lora.hasAlpha)
        let report = try Self.verify(record: record, lora: lora, at: scale)
        #expect(report.pass, "\(Self.failing(report))")
        #expect(report.cases.count == 4)
    }

    /// The records really tell the scales apart: the wrong scale, or no LoRA at all, fails the model cases.
    @Test func wrongScaleOrNoLoRAFails() throws {
        let lora = try LoRA(path: Self.file)
        let wrong = try Self.verify(record: "1.0", lora: lora, at: 0.5)
        #expect(Set(Self.failing(wrong)).isSuperset(of: ["text_b2", "transformer_b1", "transformer_b2"]))
        let none = try Self.verify(record: "0.5", lora: nil, at: 1)
        #expect(Set(Self.failing(none)).isSuperset(of: ["text_b2", "transformer_b1", "transformer_b2"]))
    }

    /// Baked into a diffusers folder by `convert --lora`, the LoRA's fused weights reproduce diffusers at that scale
    /// with no LoRA given at run time; the report records file and scale.
    @Test func bakedLoRAMatchesDiffusers() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/baked"
        let report = try DiffusersExport.write(
            try Checkpoint(path: FixturePaths.path("records/tiny-256/model")), to: out,
            lora: LoRAFusion(try LoRA(path: Self.file), scale: 0.5))
        #expect(report.lora?.scale == 0.5)
        let record = try ReferenceRecord(path: FixturePaths.path("lora/tiny-256/scale-0.5"))
        let verified = try Verifier(record: record, modelPath: out, profile: try ToleranceProfile.load("fp32")).run()
        #expect(verified.pass, "\(Self.failing(verified))")
        let json = try Checkpoint.readJSON(out + "/amused-import.json")
        #expect(json["lora"]?["transformer_weights_updated"]?.intValue == 36)
        // A LoRA that does not fit stops the export before anything is written.
        let transformerOnly = FixturePaths.path("records/tiny-256/model/transformer")
        #expect(throws: BindError.self) {
            try DiffusersExport.write(
                try Checkpoint(path: transformerOnly), to: scratch.path + "/never",
                lora: LoRAFusion(try LoRA(path: Self.file), scale: 1))
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/never"))
    }

    /// A LoRA file keeps its tensors under `transformer.` / `text_encoder.` too, but is recognised as an adapter: a
    /// lone file, not a single-file checkpoint, and refused as a model with a message saying to pass it with --lora.
    @Test func loraFileIsNotTakenForAModel() throws {
        let checkpoint = try Checkpoint(path: Self.file)
        #expect(checkpoint.layout == .file && checkpoint.isLoRA)
        #expect { _ = try AmusedComponents(path: Self.file) } throws: { error in
            (error as? BindError)?.kind == .lora && (error as? BindError)?.message.contains("--lora") == true
        }
    }

    /// Rewrites the fixture's tensors through `edit` (nil drops a tensor) into a scratch file.
    static func rewritten(
        _ scratch: ScratchFolder, extra: [(String, Tensor)] = [],
        _ edit: (String, Tensor) throws -> (String, Tensor)?
    ) throws -> String {
        let source = try SafetensorsFile(path: file)
        var out: [(name: String, tensor: Tensor)] = []
        for name in source.names {
            if let (n, t) = try edit(name, try source.tensor(named: name).contiguous()) { out.append((n, t)) }
        }
        for (n, t) in extra { out.append((n, t)) }
        let path = scratch.path + "/lora.safetensors"
        try SafetensorsWriter.write(out, to: path)
        return path
    }

    /// The older `lora.down` / `lora.up` names read the same; a file with `alpha` = 2r fused at 0.5 is the no-alpha
    /// file at 1.0 (scale × alpha / r), and both match diffusers' scale-1.0 record.
    @Test func legacyNamesAndAlpha() throws {
        let scratch = try ScratchFolder()
        var modules: [String: Int] = [:]
        let path = try Self.rewritten(scratch) { name, t in
            if name.hasSuffix(".lora_A.weight") { modules[String(name.dropLast(".lora_A.weight".count))] = t.shape[0] }
            return (
                name.replacingOccurrences(of: ".lora_A.weight", with: ".lora.down.weight")
                    .replacingOccurrences(of: ".lora_B.weight", with: ".lora.up.weight"), t
            )
        }
        let legacy = try LoRA(path: path)
        #expect(try Self.verify(record: "1.0", lora: legacy, at: 1).pass)

        let withAlpha = try Self.rewritten(
            scratch,
            extra: try modules.map { module, r in
                (module + ".alpha", try Tensor(floats: [Float(2 * r)], shape: []))
            }
        ) { name, t in (name, t) }
        let alpha = try LoRA(path: withAlpha)
        #expect(alpha.hasAlpha)
        #expect(alpha.scaleNote(scale: 0.5).contains("alpha from the file"))
        let report = try Self.verify(record: "1.0", lora: alpha, at: 0.5)
        #expect(report.pass, "\(Self.failing(report))")
    }

    /// Each malformed file is refused with an error naming the file and the key.
    @Test func malformedFilesAreRefused() throws {
        let scratch = try ScratchFolder()
        let target = "transformer.transformer_layers.0.attn1.to_q"
        func refused(
            _ edit: (String, Tensor) throws -> (String, Tensor)?, extra: [(String, Tensor)] = [],
            key: String, saying text: String, atFuse: Bool = false
        ) throws {
            let path = try Self.rewritten(scratch, extra: extra, edit)
            do {
                let lora = try LoRA(path: path)
                #expect(atFuse, "parsing should have failed for \(key)")
                _ = try AmusedComponents(
                    path: FixturePaths.path("records/tiny-256/model"), lora: LoRAFusion(lora, scale: 1))
                Issue.record("\(key): no error")
            } catch let error as BindError {
                #expect(error.kind == .lora && error.path == path && error.key == key, "\(error)")
                #expect(error.message.contains(text), "\(error.message)")
            }
        }
        // A key outside the transformer./text_encoder. prefixes (a UNet LoRA, say).
        try refused(
            { n, t in (n.replacingOccurrences(of: "transformer.transformer_layers.0.attn1.to_q.", with: "unet.x."), t)
            },
            key: "unet.x.lora_A.weight", saying: "does not start with")
        // A DoRA magnitude vector.
        try refused(
            { n, t in (n, t) }, extra: [(target + ".lora_magnitude_vector", try Tensor(floats: [1], shape: [1]))],
            key: target + ".lora_magnitude_vector", saying: "DoRA")
        // B without A.
        try refused({ n, t in n == target + ".lora_A.weight" ? nil : (n, t) }, key: target, saying: "no A")
        // Ranks that disagree.
        try refused(
            { n, t in
                n == target + ".lora_A.weight"
                    ? (n, try Tensor(floats: [Float](repeating: 0, count: 3 * t.shape[1]), shape: [3, t.shape[1]]))
                    : (n, t)
            }, key: target, saying: "ranks disagree")
        // A module the graph does not have.
        try refused(
            { n, t in
                (n.replacingOccurrences(of: target + ".", with: "transformer.transformer_layers.0.attn9.to_q."), t)
            },
            key: "transformer.transformer_layers.0.attn9.to_q.weight", saying: "has no weight", atFuse: true)
        // B · A that does not fit the weight.
        try refused(
            { n, t in
                n == target + ".lora_B.weight"
                    ? (n, try Tensor(floats: [Float](repeating: 0, count: 5 * t.shape[1]), shape: [5, t.shape[1]]))
                    : (n, t)
            }, key: target + ".weight", saying: "trained on a different model", atFuse: true)
    }

    /// A LoRA for the text encoder and transformer against a folder holding only the transformer: the text-encoder
    /// updates have nowhere to go, which is an error, not a silent skip.
    @Test func updatesForAMissingComponentAreAnError() throws {
        let lora = try LoRA(path: Self.file)
        #expect(throws: BindError.self) {
            _ = try AmusedComponents(
                path: FixturePaths.path("records/tiny-256/model/transformer"),
                lora: LoRAFusion(lora, scale: 1))
        }
        // Asking only for the transformer leaves the text encoder's updates unused, by request.
        let only = try AmusedComponents(
            path: FixturePaths.path("records/tiny-256/model/transformer"), only: [.transformer],
            lora: LoRAFusion(lora, scale: 1))
        #expect(only.transformer != nil)
    }
}
