// `amused verify` from the command line: exit 0 on parity, 3 when parity fails, 1 on bad input; JSON output.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import CGemm
import Foundation
import Testing

@Suite("amused verify", .serialized)
struct VerifyCommandTests {
    @Test(arguments: ["tiny-256", "tiny-512", "tiny-variant"])
    func passesOnCommittedRecords(_ record: String) throws {
        try expectPass(record)
    }

    /// The same through AmusedKit's own SGEMM, which release builds use on AVX-512 CPUs: `AMUSED_GEMM=own` forces
    /// the CPU's widest kernel into this debug build (BLAS otherwise does the products here), so every layer and the
    /// sampler run through it against the PyTorch record.
    @Test(.enabled(if: amused_sgemm_width() != 0, "the CPU has neither AVX-512F nor AVX2; BLAS does every product"))
    func passesThroughTheOwnSGEMM() throws {
        let version = try runAmused(["version"], environment: ["AMUSED_GEMM": "own"])
        let name = amused_sgemm_width() == 512 ? "AmusedKit AVX-512 SGEMM" : "AmusedKit AVX2 SGEMM"
        #expect(version.stdout.contains(name), "\(version.stdout)")
        try expectPass("tiny-256", environment: ["AMUSED_GEMM": "own"])
    }

    /// And through the AVX2 kernel (`AMUSED_GEMM=avx2`, opt-in; AVX-512 CPUs run it too).
    @Test(.enabled(if: amused_sgemm_width() != 0, "the CPU has no AVX2"))
    func passesThroughTheAVX2SGEMM() throws {
        let version = try runAmused(["version"], environment: ["AMUSED_GEMM": "avx2"])
        #expect(version.stdout.contains("AmusedKit AVX2 SGEMM"), "\(version.stdout)")
        try expectPass("tiny-256", environment: ["AMUSED_GEMM": "avx2"])
    }

    func expectPass(_ record: String, environment: [String: String] = [:]) throws {
        let result = try runAmused(
            ["verify", "--reference", FixturePaths.path("records/\(record)"), "--json"],
            environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(result.stdout.utf8))
        #expect(report["pass"]?.boolValue == true)
        let cases = try #require(report["cases"]?.arrayValue)
        #expect(
            cases.allSatisfy { $0["name"] != nil && $0["kind"] != nil && $0["metrics"] != nil && $0["pass"] != nil })
        // Every case runs, pipelines included, and they report per-step token agreement.
        #expect(cases.allSatisfy { $0["status"]?.stringValue == "pass" && $0["pass"]?.boolValue == true })
        for c in cases where ["text_to_image", "image_to_image", "inpaint"].contains(c["kind"]?.stringValue ?? "") {
            #expect(c["token_agreement_per_step"]?.arrayValue?.isEmpty == false)
            #expect(c["first_diverging_step"] == .null)
        }
    }

    /// A checkpoint whose weights differ from the reference's fails with exit code 3 and names the first tensor
    /// out of tolerance.
    @Test func perturbedWeightsFailWithExitThree() throws {
        let scratch = try ScratchFolder()
        let source = FixturePaths.path("records/tiny-256/model")
        let model = scratch.path + "/model"
        try FileManager.default.copyItem(atPath: source, toPath: model)
        let path = model + "/transformer/diffusion_pytorch_model.safetensors"
        let file = try SafetensorsFile(path: path)
        let tensors: [(name: String, tensor: Tensor)] = try file.names.map { name in
            let t = try file.tensor(named: name)
            guard name == "mlm_layer.conv2.weight" else { return (name, try t.contiguous()) }
            return (name, try Tensor(floats: try t.floats().map { $0 * 1.01 }, shape: t.shape))
        }
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path)
        let junit = scratch.path + "/report.xml"
        let result = try runAmused([
            "verify", model, "--reference", FixturePaths.path("records/tiny-256"),
            "--junit", junit,
        ])
        #expect(result.status == 3)
        #expect(result.stdout.contains("FAIL"))
        #expect(result.stdout.contains("first tensor out of tolerance: transformer_b1/logits"))
        // The JUnit report says the same, in the form CI services read.
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(JUnitSchema.problems(xml) == [])
        #expect(xml.contains(#"<failure type="parity" message="first tensor out of tolerance: transformer_b1/logits"#))
    }

    /// `--junit` writes one testcase per record case, with its time and metrics, valid under the JUnit schema; the
    /// counts agree with the JSON report of the same run.
    @Test func junitReportOfAPassingRecord() throws {
        let scratch = try ScratchFolder()
        let junit = scratch.path + "/report.xml"
        let result = try runAmused([
            "verify", "--reference", FixturePaths.path("records/tiny-512"), "--json",
            "--junit", junit,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(result.stdout.utf8))
        let cases = try #require(report["cases"]?.arrayValue)
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(JUnitSchema.problems(xml) == [])
        #expect(
            xml.contains(
                #"<testsuite name="\#(FixturePaths.path("records/tiny-512"))" tests="\#(cases.count)" failures="0" errors="0" skipped="0""#
            ))
        for c in cases {
            #expect(
                xml.contains(
                    #"<testcase name="\#(c["name"]!.stringValue!)" classname="amused.verify.\#(c["kind"]!.stringValue!)" time=""#
                ))
        }
        #expect(!xml.contains("<failure"))
        // The checker itself refuses what the schema refuses.
        #expect(!JUnitSchema.problems(xml.replacingOccurrences(of: "<testsuite name", with: "<testsuite nom")).isEmpty)
        #expect(
            !JUnitSchema.problems(
                xml.replacingOccurrences(of: "<properties>", with: "<props>")
                    .replacingOccurrences(of: "</properties>", with: "</props>")
            ).isEmpty)
        #expect(!JUnitSchema.problems(xml.replacingOccurrences(of: #"time=""#, with: #"time="1s"#)).isEmpty)
    }

    /// A case this version cannot run (here a kind it does not know) fails the run unless --allow-skip, and the
    /// summary counts it; before, a record of skipped cases plus one pass exited 0.
    @Test func skippedCasesFailUnlessAllowed() throws {
        let scratch = try ScratchFolder()
        let source = FixturePaths.path("records/tiny-256")
        var root = try FixturePaths.json("records/tiny-256/record.json").objectValue!
        let first = try #require(root["cases"]?.arrayValue?.first { $0["kind"]?.stringValue == "vq_decode" })
        var future = JSONObject()
        future.insert("name", .string("future_case"))
        future.insert("kind", .string("video_to_video"))
        root.set("cases", .array([first, .object(future)]))
        root.set("model", .string(source + "/model"))
        try scratch.write("record.json", Array(JSONValue.object(root).serialized.utf8))
        try FileManager.default.createSymbolicLink(
            atPath: scratch.path + "/record.safetensors",
            withDestinationPath: source + "/record.safetensors")
        let strict = try runAmused(["verify", "--reference", scratch.path, "--junit", scratch.path + "/strict.xml"])
        #expect(strict.status == 3, "\(strict.stdout)\(strict.stderr)")
        #expect(strict.stdout.contains("1 passed, 0 failed, 1 skipped"), "\(strict.stdout)")
        // JUnit: a skip that fails the run is a failure there too; an allowed one is <skipped/>.
        let strictXML = try String(contentsOfFile: scratch.path + "/strict.xml", encoding: .utf8)
        #expect(JUnitSchema.problems(strictXML) == [] && strictXML.contains(#"<failure type="skipped""#))
        let allowed = try runAmused([
            "verify", "--reference", scratch.path, "--allow-skip", "--json",
            "--junit", scratch.path + "/allowed.xml",
        ])
        let allowedXML = try String(contentsOfFile: scratch.path + "/allowed.xml", encoding: .utf8)
        #expect(
            JUnitSchema.problems(allowedXML) == []
                && allowedXML.contains("<skipped message=\"not run: unknown case kind"))
        #expect(allowed.status == 0, "\(allowed.stdout)\(allowed.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(allowed.stdout.utf8))
        #expect(report["skipped"]?.intValue == 1 && report["skips_allowed"]?.boolValue == true)
    }

    /// A record is a file strangers may write: a pipeline case with a negative height, an infinite strength or a
    /// billion steps is bad input (exit 1, naming the problem), where a negative height used to trap.
    @Test(arguments: [
        ("height", JSONValue.number("-32")), ("strength", .number("1e400")), ("steps", .number("1000000000")),
    ])
    func hostilePipelineCaseIsBadInput(_ key: String, _ value: JSONValue) throws {
        let scratch = try ScratchFolder()
        let source = FixturePaths.path("records/tiny-256")
        var root = try FixturePaths.json("records/tiny-256/record.json").objectValue!
        var i2i = try #require(
            root["cases"]?.arrayValue?.first { $0["kind"]?.stringValue == "image_to_image" }?.objectValue)
        i2i.set(key, value)
        if key == "height" { i2i.set("kind", .string("text_to_image")) }
        root.set("cases", .array([.object(i2i)]))
        root.set("model", .string(source + "/model"))
        try scratch.write("record.json", Array(JSONValue.object(root).serialized.utf8))
        try FileManager.default.createSymbolicLink(
            atPath: scratch.path + "/record.safetensors",
            withDestinationPath: source + "/record.safetensors")
        let result = try runAmused(["verify", "--reference", scratch.path])
        #expect(result.status == 1, "\(key): \(result.stdout)\(result.stderr)")
        #expect(
            result.stderr.contains("at most 256 images") || result.stderr.contains("strength within 0…1"),
            "\(result.stderr)")
    }

    @Test func missingRecordIsBadInput() throws {
        let result = try runAmused(["verify", "--reference", "/nonexistent/record"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/record"))
    }

    @Test func unknownProfileIsBadInput() throws {
        let result = try runAmused([
            "verify", "--reference", FixturePaths.path("records/tiny-256"), "--profile", "nope",
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("nope"))
    }

    /// `--lora` fuses a PEFT LoRA before verifying (records of diffusers with the LoRA loaded at 0.5), says loudly
    /// which scale it used, and the wrong scale fails parity.
    @Test func loraIsFusedAtTheStatedScale() throws {
        let lora = FixturePaths.path("lora/tiny-256/pytorch_lora_weights.safetensors")
        let record = FixturePaths.path("lora/tiny-256/scale-0.5")
        let ok = try runAmused(["verify", "--reference", record, "--lora", lora, "--lora-scale", "0.5"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stderr.contains("stores no alpha") && ok.stderr.contains("scale 0.5"))
        let wrong = try runAmused(["verify", "--reference", record, "--lora", lora])
        #expect(wrong.status == 3)
        let inspect = try runAmused(["inspect", lora])
        #expect(inspect.status == 0 && inspect.stdout.contains("LoRA: 42 Linear updates (rank 2, 4)"))
        let orphan = try runAmused(["verify", "--reference", record, "--lora-scale", "2"])
        #expect(orphan.status != 0 && orphan.stderr.contains("--lora-scale needs --lora"))
    }
}
