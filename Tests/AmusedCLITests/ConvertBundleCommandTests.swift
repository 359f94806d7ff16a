// `amused convert MODEL --out F.amused` end to end: the plan up front and a stage line per stage, --verify storing
// the report (or failing with exit 3 and writing nothing), and the bundle working with inspect, verify and generate;
// any flipped byte is an integrity error in all three; killing convert at random moments never leaves a partial
// bundle, and the next run cleans up what a killed one left.

import AmusedImage
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("amused convert to bundles", .serialized)
struct ConvertBundleCommandTests {
    let model = FixturePaths.path("records/tiny-256/model")

    /// A record with only the named cases of tiny-256 (the same tensors, fewer cases, so debug builds stay quick).
    func subsetRecord(_ names: Set<String>, in scratch: ScratchFolder, of name: String = "tiny-256") throws -> String {
        let source = FixturePaths.path("records/\(name)")
        var root = try Checkpoint.readJSON(source + "/record.json").objectValue!
        root.set("cases", .array(root["cases"]!.arrayValue!.filter { names.contains($0["name"]?.stringValue ?? "") }))
        let model = root["model"]!.stringValue!
        root.set("model", .string(model.hasPrefix("/") ? model : source + "/" + model))
        let folder = scratch.path + "/record" + (name == "tiny-256" ? "" : "-" + name)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(JSONValue.object(root).serialized.utf8).write(to: URL(fileURLWithPath: folder + "/record.json"))
        try FileManager.default.createSymbolicLink(
            atPath: folder + "/record.safetensors",
            withDestinationPath: source + "/record.safetensors")
        return folder
    }

    @Test func convertVerifiesStoresTheReportAndTheBundleRuns() throws {
        let scratch = try ScratchFolder()
        let record = try subsetRecord(["transformer_b1", "vq_decode_b1", "t2i_b2_nocfg"], in: scratch)
        let out = scratch.path + "/tiny.amused"
        let junit = scratch.path + "/parity.xml"
        let convert = try runAmused([
            "convert", model, "--out", out, "--quantize", "int8", "--verify", record,
            "--junit", junit,
        ])
        #expect(convert.status == 0, "\(convert.stderr)")
        // The parity report as JUnit XML too, one testcase per record case.
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(JUnitSchema.problems(xml) == [])
        #expect(xml.contains(#"tests="3" failures="0""#) && xml.components(separatedBy: "<testcase ").count == 4)
        // The plan comes first, then one line per stage.
        let plan = try #require(convert.stderr.range(of: "quantization plan (policy int8)"))
        let quantize = try #require(convert.stderr.range(of: "] quantize:"))
        #expect(plan.lowerBound < quantize.lowerBound)
        for stage in ["] read:", "] map + bind:", "] digest:", "] quantize:", "] verify:", "] pack:", "] wrote "] {
            #expect(convert.stderr.contains(stage), "\(stage)")
        }
        let inspect = try runAmused(["inspect", out, "--check"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.stdout.contains("parity: PASSED"))
        #expect(inspect.stdout.contains("integrity: every tensor's SHA-256 and all padding verified"))
        let json = try runAmused(["inspect", out, "--json"])
        let manifest = try StrictJSONParser(path: "manifest").parse(Array(json.stdout.utf8))
        #expect(try SchemaValidator().errors(manifest, schema: "bundle-manifest.schema.json") == [])
        #expect(manifest["parity"]?["pass"] == .bool(true))
        #expect(manifest["parity"]?["model"]?.stringValue == "tiny.amused")

        let verify = try runAmused(["verify", out, "--reference", record, "--json"])
        #expect(verify.status == 0, "\(verify.stderr)")
        let report = try StrictJSONParser(path: "report").parse(Array(verify.stdout.utf8))
        #expect(report["profile"]?.stringValue == "int8")  // the bundle's policy names its profile

        let png = scratch.path + "/cat.png"
        let generate = try runAmused([
            "generate", "--model", out, "--prompt", "a photo of a cat", "--steps", "4",
            "--out", png,
        ])
        #expect(generate.status == 0, "\(generate.stderr)")
        let image = try PNG.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: png))))
        #expect(image.width == 32 && image.height == 32)
    }

    @Test func aFailedParityCheckWritesNothingAndExitsThree() throws {
        let scratch = try ScratchFolder()
        let record = try subsetRecord(["transformer_b1"], in: scratch)
        let out = scratch.path + "/strict.amused"
        // int4 weights cannot pass the float32 profile.
        let result = try runAmused([
            "convert", model, "--out", out, "--quantize", "int4", "--int4-group", "32",
            "--verify", record, "--profile", "fp32",
        ])
        #expect(result.status == 3, "\(result.stderr)")
        #expect(result.stderr.contains("failed its parity check; nothing was written"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["record"])
    }

    /// A deliberately broken int8 quantizer (each row's scale stored one row down, AMUSED_TEST_BREAK_QUANTIZER) fails
    /// the int8 profile — on the random tiny model and on the trained default, which the profile was not fitted on —
    /// while the correct quantizer passes the same cases: the gate measures quantization error, not noise.
    @Test(arguments: [
        ("tiny-256", ["transformer_b1", "t2i_b1_cfg"]), ("shapes-64", ["transformer_b1", "vq_decode_b1"]),
    ])
    func aBrokenQuantizerFailsTheInt8Profile(_ name: String, _ cases: [String]) throws {
        let scratch = try ScratchFolder()
        let record = try subsetRecord(Set(cases), in: scratch, of: name)
        let source = try Checkpoint.readJSON(record + "/record.json")["model"]!.stringValue!
        let good = try runAmused([
            "convert", source, "--out", scratch.path + "/good.amused", "--quantize", "int8",
            "--verify", record,
        ])
        #expect(good.status == 0, "\(good.stderr)")
        let broken = try runAmused(
            [
                "convert", source, "--out", scratch.path + "/broken.amused", "--quantize", "int8",
                "--verify", record,
            ], environment: ["AMUSED_TEST_BREAK_QUANTIZER": "shifted-scales"])
        #expect(broken.status == 3, "\(broken.stderr)")
        #expect(broken.stderr.contains("failed its parity check; nothing was written"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/broken.amused"))
    }

    @Test func aFlippedByteIsAnIntegrityErrorForInspectVerifyAndGenerate() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/b.amused"
        #expect(try runAmused(["convert", model, "--out", out]).status == 0)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
        bytes[200] ^= 0x01  // inside the first tensor's buffer (the text encoder's token embedding)
        try Data(bytes).write(to: URL(fileURLWithPath: out))
        let record = try subsetRecord(["transformer_b1"], in: scratch)
        for args in [
            ["inspect", out, "--check"], ["verify", out, "--reference", record],
            ["generate", "--model", out, "--prompt", "x", "--out", scratch.path + "/x.png"],
        ] {
            let result = try runAmused(args)
            #expect(result.status == 1, "\(args[0]): \(result.stderr)")
            #expect(result.stderr.contains("(integrity)"), "\(args[0]): \(result.stderr)")
            #expect(
                result.stderr.contains("[text_encoder/text_model.embeddings.token_embedding.weight data]"),
                "\(args[0]) must name the tensor: \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/x.png"))
    }

    @Test func dryRunPrintsThePlanAndWritesNothing() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/never.amused"
        let result = try runAmused(["convert", model, "--out", out, "--quantize", "mixed", "--dry-run"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("tensor\tshape\tuse\tscheme\tproducts\tbytes\treason\n"))
        #expect(
            result.stdout.contains(
                "transformer/transformer_layers.0.attn1.to_q.weight\t[32, 32]\tlinear\tint8\tint8·int8→int32\t"))
        #expect(result.stdout.contains("int4g64 → int8: rows of 32 inputs do not split into groups of 64"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func killedConversionsLeaveTheOldBundleOrTheNewOneNeverAPartialOne() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/k.amused"
        // The old bundle (int8); every run writes the new one (fp16), killed at a random moment.
        #expect(try runAmused(["convert", model, "--out", out, "--quantize", "int8"]).status == 0)
        let old = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(
            try runAmused(["convert", model, "--out", scratch.path + "/new.amused", "--quantize", "fp16"]).status == 0)
        let new = try Data(contentsOf: URL(fileURLWithPath: scratch.path + "/new.amused"))
        let binary = try amusedBinary()
        var generator = SystemRandomNumberGenerator()
        func staging() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? []).filter { $0.hasSuffix(".tmp") }
        }
        // How long a run's staging file exists: kills are aimed inside that window, so they land mid-write.
        func start() throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["convert", model, "--out", out, "--quantize", "fp16"]
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        func waitForStaging(_ process: Process, known: Set<String>) -> Bool {
            for _ in 0..<20_000 where process.isRunning {
                if !Set(staging()).subtracting(known).isEmpty { return true }
                usleep(500)
            }
            return false
        }
        let probe = try start()
        #expect(waitForStaging(probe, known: Set(staging())), "no staging file was seen")
        let opened = Date()
        probe.waitUntilExit()
        let window = max(Date().timeIntervalSince(opened), 0.001)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == new)
        try old.write(to: URL(fileURLWithPath: out))
        var sawOld = 0, sawNew = 0, midWrite = 0
        for _ in 0..<50 {
            let known = Set(staging())
            let process = try start()
            let staged = waitForStaging(process, known: known)
            usleep(UInt32(Double.random(in: 0..<window, using: &generator) * 1_000_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let now = try Data(contentsOf: URL(fileURLWithPath: out))
            #expect(now == old || now == new, "a killed conversion left \(now.count) bytes that are neither bundle")
            if now == old { sawOld += 1 } else { sawNew += 1 }
            // Killed while its staging file was written: the file is still there and the destination is untouched.
            if staged && now == old && !Set(staging()).subtracting(known).isEmpty { midWrite += 1 }
            if now == new { try old.write(to: URL(fileURLWithPath: out)) }
        }
        // The kills must really land mid-write (with the delay drawn inside the staging window about half of them
        // do; ten of fifty is far below that, and far above a test whose kills all land before or after writing).
        #expect(midWrite >= 10, "only \(midWrite) of 50 kills landed while the bundle was being written")
        #expect(sawOld + sawNew == 50)
        // Temporary files of killed runs may remain until the next run, which removes them.
        #expect(try runAmused(["convert", model, "--out", out, "--quantize", "fp16"]).status == 0)
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasSuffix(".tmp") }
        #expect(left == [], "temporary files left: \(left)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == new)
    }

    /// OUT-03: an fsync that fails with EIO (of the bundle's staging file, or of the folder after the rename) is never
    /// reported as success: exit 1 naming fsync and the errno; a failed file fsync leaves the old bundle in place and
    /// no staging file behind.
    @Test(arguments: ["file", "folder"])
    func aFailingFsyncIsAnError(_ which: String) throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/k.amused"
        try Data("the previous file".utf8).write(to: URL(fileURLWithPath: out))
        let result = try runAmused(
            ["convert", model, "--out", out, "--quantize", "int8"],
            environment: ["AMUSED_TEST_FAIL_FSYNC": which])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.contains("fsync") && result.stderr.contains("Input/output error"), "\(result.stderr)")
        #expect(!result.stderr.contains("wrote "), "\(result.stderr)")
        if which == "file" {
            #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data("the previous file".utf8))
        }
        #expect(try scratch.listing() == ["k.amused"])
    }

    /// OUT-06: a destination that is a symlink is replaced by the new file, never written through to its target.
    @Test func aSymlinkedDestinationIsReplacedNotFollowed() throws {
        let scratch = try ScratchFolder()
        let victim = try scratch.write("victim.txt", Array("keep me".utf8))
        let out = scratch.path + "/k.amused"
        try FileManager.default.createSymbolicLink(atPath: out, withDestinationPath: victim)
        let result = try runAmused(["convert", model, "--out", out, "--quantize", "int8"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me")
        let type = try FileManager.default.attributesOfItem(atPath: out)[.type] as? FileAttributeType
        #expect(type == .typeRegular)
    }

    /// Writes that fail part-way (here: a file-size limit, past which write(2) returns EFBIG as it would on a full disk
    /// — `amused` ignores SIGXFSZ) exit 1 naming the file and the errno text; the destination keeps its old bytes and
    /// no temporary file is left — for a bundle, a plain safetensors conversion and a generated PNG.
    @Test(arguments: [
        (["convert", "MODEL", "--out", "OUT", "--quantize", "int8"], "k.amused", 1024),  // 2.9 MB bundle, 1 MB limit
        (
            [
                "export", "MODEL/transformer/diffusion_pytorch_model.safetensors", "--format", "safetensors", "--out",
                "OUT",
            ],
            "t.safetensors", 256
        ),
        (["generate", "--model", "MODEL", "--prompt", "a photo of a cat", "--out", "OUT"], "cat.png", 1),
    ])
    func aWriteThatFailsPartWayLeavesTheDestinationAsItWas(_ arguments: [String], name: String, blocks: Int) throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/" + name
        let old = Data("the previous file".utf8)
        try old.write(to: URL(fileURLWithPath: out))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments =
            ["-c", "ulimit -f \(blocks); exec \"$0\" \"$@\"", try amusedBinary()]
            + arguments.map { $0 == "OUT" ? out : $0.replacingOccurrences(of: "MODEL", with: model) }
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 1, "\(stderr)")
        #expect(stderr.contains("File too large"), "\(stderr)")
        #expect(stderr.contains(name), "the message names the file: \(stderr)")
        #expect(!stderr.contains("exists and is readable"), "read advice for a write error: \(stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == old)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == [name])
    }
}
