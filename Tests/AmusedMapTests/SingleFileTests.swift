// A single weights file holding every component under a prefix (`transformer.`, `vqvae.`, `text_encoder.`), with
// configs, tokenizer and scheduler from a diffusers folder; and forcing a layout. The file is assembled here from
// the tiny-256 fixture's component files, so the reference is that fixture's PyTorch record.

import AmusedBind
import AmusedConvert
import AmusedCore
import AmusedModel
import AmusedRead
import AmusedTestSupport
import AmusedVerify
import Foundation
import Testing

@Suite("single files, variants and forced layouts")
struct SingleFileTests {
    static let model = FixturePaths.path("records/tiny-256/model")
    static let parts = [
        ("transformer", "transformer/diffusion_pytorch_model.safetensors"),
        ("vqvae", "vqvae/diffusion_pytorch_model.safetensors"),
        ("text_encoder", "text_encoder/model.safetensors"),
    ]

    /// Every tensor of the fixture's three component files under its component prefix, plus `extra`.
    static func singleFile(_ scratch: ScratchFolder, vqPrefix: String = "vqvae", extra: [(String, Tensor)] = []) throws
        -> String
    {
        var tensors: [(name: String, tensor: Tensor)] = []
        for (prefix, file) in parts {
            let source = try SafetensorsFile(path: model + "/" + file)
            for name in source.names {
                tensors.append(
                    ((prefix == "vqvae" ? vqPrefix : prefix) + "." + name, try source.tensor(named: name).contiguous()))
            }
        }
        tensors += extra.map { ($0.0, $0.1) }
        let path = scratch.path + "/amused-tiny-256.safetensors"
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path)
        return path
    }

    /// With the configs of a diffusers folder, the single file passes every case of the fixture's record, the
    /// pipelines included; with the legacy `vae.` prefix the component cases (the pipelines add nothing there).
    @Test(arguments: ["vqvae", "vae"])
    func singleFileVerifiesWithConfigs(_ vqPrefix: String) throws {
        let scratch = try ScratchFolder()
        let file = try Self.singleFile(scratch, vqPrefix: vqPrefix)
        let checkpoint = try Checkpoint(path: file, configs: Self.model)
        #expect(checkpoint.layout == .singleFile)
        #expect(
            checkpoint.components.map(\.name) == ["transformer", "vqvae", "text_encoder", "tokenizer", "scheduler"])
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256"))
        let verifier = try Verifier(
            record: record, modelPath: file, profile: try ToleranceProfile.load("fp32"),
            configs: Self.model)
        let components = ["text_encoder", "transformer", "vq_decode", "vq_encode"]
        for c in record.cases where vqPrefix == "vqvae" || components.contains(c.kind) {
            let result = try verifier.check(c)
            #expect(result.status == .pass, "\(c.name)")
        }
    }

    /// Imported as a diffusers folder, the single file gives back the fixture's component files byte for byte.
    @Test func singleFileImportsAsTheDiffusersFolder() throws {
        let scratch = try ScratchFolder()
        let file = try Self.singleFile(scratch)
        let out = scratch.path + "/out"
        try DiffusersExport.write(try Checkpoint(path: file, configs: Self.model), to: out)
        for (_, path) in Self.parts {
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: out + "/" + path))
                    == Data(contentsOf: URL(fileURLWithPath: Self.model + "/" + path)), "\(path)")
        }
        #expect(FileManager.default.fileExists(atPath: out + "/tokenizer/vocab.json"))
    }

    /// Without configs the error says what to pass; a tensor under no component prefix is named.
    @Test func singleFileErrors() throws {
        let scratch = try ScratchFolder()
        let file = try Self.singleFile(scratch)
        #expect { _ = try AmusedComponents(path: file) } throws: { error in
            (error as? BindError)?.kind == .config && (error as? BindError)?.message.contains("--configs") == true
        }
        let other = try ScratchFolder()
        let stray = try Self.singleFile(other, extra: [("unet.conv_in.weight", try Tensor(floats: [0], shape: [1]))])
        #expect(try Checkpoint(path: stray).layout == .file)  // not all prefixed: a plain file, detected as such
        #expect { _ = try Checkpoint(path: stray, layout: .singleFile) } throws: { error in
            (error as? ReadError)?.field == "unet.conv_in.weight"
        }
    }

    /// A forced layout is used when the files fit it and refused, saying why, when they do not.
    @Test func forcedLayouts() throws {
        #expect { _ = try Checkpoint(path: Self.model, layout: .openMuse) } throws: { error in
            (error as? ReadError)?.message.contains("--layout open-muse does not fit") == true
        }
        #expect(throws: ReadError.self) { _ = try Checkpoint(path: Self.model, layout: .singleFile) }
        #expect(throws: ReadError.self) {
            _ = try Checkpoint(path: FixturePaths.path("openmuse/tiny-512"), layout: .pipeline)
        }
        #expect(try Checkpoint(path: FixturePaths.path("openmuse/tiny-512"), layout: .openMuse).layout == .openMuse)
        let scratch = try ScratchFolder()
        let file = try Self.singleFile(scratch)
        #expect(try Checkpoint(path: file, layout: .file).layout == .file)
    }

    /// `*.fp16.safetensors` variant files are chosen by `variant: "fp16"` and widened to float32: they pass the
    /// record diffusers made from `from_pretrained(variant="fp16", torch_dtype=float32)` (Fixtures/records/
    /// tiny-256-fp16), which the fp32 files fail; imported, they keep their dtype byte for byte.
    @Test func fp16VariantFiles() throws {
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256-fp16"))
        let fp32 = try ToleranceProfile.load("fp32")
        let half = try Verifier(record: record, profile: fp32, variant: "fp16").run()
        #expect(half.pass, "\(half.cases.filter { $0.status != .pass }.map(\.name))")
        let full = try Verifier(record: record, profile: fp32).run()
        #expect(!full.pass)

        let scratch = try ScratchFolder()
        try DiffusersExport.write(try Checkpoint(path: Self.model, variant: "fp16"), to: scratch.path + "/out")
        for (_, path) in Self.parts {
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: scratch.path + "/out/" + path))
                    == Data(
                        contentsOf: URL(
                            fileURLWithPath: Self.model + "/"
                                + path.replacingOccurrences(of: ".safetensors", with: ".fp16.safetensors"))), "\(path)")
        }
    }
}
