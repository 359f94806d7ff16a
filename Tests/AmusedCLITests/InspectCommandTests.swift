// The `amused` executable end to end: exit codes, stdout/stderr, JSON output.

import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

/// Runs the built `amused` with `arguments` (and extra `environment`); returns exit status, stdout and stderr.
/// The `amused` executable built beside the tests (or in .build/debug).
func amusedBinary() throws -> String {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("amused")
            .path,
        FixturePaths.repo + "/.build/debug/amused",
    ]
    return try #require(
        candidates.first { FileManager.default.isExecutableFile(atPath: $0) },
        "build the amused executable first (swift build)")
}

/// Runs the `amused` executable with `arguments`; returns its exit status, stdout and stderr.
func runAmused(_ arguments: [String], environment: [String: String] = [:]) throws
    -> (status: Int32, stdout: String, stderr: String)
{
    let binary = try amusedBinary()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

@Suite("amused inspect", .serialized)
struct InspectCommandTests {
    @Test func jsonReportOfThePipelineFixture() throws {
        let model = FixturePaths.path("records/tiny-512/model")
        let result = try runAmused(["inspect", model, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(result.stdout.utf8))
        #expect(report["layout"]?.stringValue == "pipeline")
        let components = try #require(report["components"]?.arrayValue)
        #expect(
            components.compactMap { $0["name"]?.stringValue }.sorted()
                == ["scheduler", "text_encoder", "tokenizer", "transformer", "vqvae"])
        // Totals agree with the file headers, read independently here.
        let checkpoint = try Checkpoint(path: model, mapData: false)
        let bytes = checkpoint.components.compactMap(\.weights).reduce(0) { $0 + $1.totalBytes }
        #expect(report["totals"]?["bytes"]?.intValue == bytes)
        let transformer = try #require(components.first { $0["name"]?.stringValue == "transformer" })
        #expect(transformer["config"]?["downsample"]?.boolValue == true)
        let first = try #require(transformer["weights"]?["tensors"]?.arrayValue?.first)
        #expect(first["dtype"]?.stringValue == "F32")
    }

    @Test func textReportListsTensorsAndConfig() throws {
        let result = try runAmused(["inspect", FixturePaths.path("records/tiny-256/model/transformer")])
        #expect(result.status == 0)
        #expect(result.stdout.contains("UVit2DModel"))
        #expect(result.stdout.contains("mlm_layer.conv2.weight"))
        #expect(result.stdout.contains("[64, 12, 1, 1]"))
        #expect(result.stdout.contains("sample_size = 8"))
    }

    @Test func badInputExitsOneNamingTheFile() throws {
        let scratch = try ScratchFolder()
        let path = try scratch.write("bad.safetensors", [8, 0, 0, 0, 0, 0, 0, 0] + Array("{\"a\":1,}".utf8))
        let result = try runAmused(["inspect", path])
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains(path))
        #expect(result.stderr.contains("at byte"))
    }

    /// HDF5 is parsed by libhdf5 in a child process: a file listing works as usual, and a crash inside libhdf5
    /// (simulated with a real invalid write in the child) is reported as a malformed file (H5-12), not a crash.
    @Test func hdf5IsReadInAHelperProcess() throws {
        let file = FixturePaths.path("formats/weights.h5")
        let ok = try runAmused(["inspect", file, "--json"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("model_weights.dense.kernel:0"))
        #expect(ok.stdout.contains("\"format\":\"hdf5\""))
        let crashed = try runAmused(["inspect", file], environment: ["AMUSED_HDF5_HELPER_SIMULATE_CRASH": "1"])
        #expect(crashed.status == 1)
        #expect(crashed.stderr.contains("libhdf5 crashed"))
        #expect(crashed.stderr.contains("(malformed)"))
        // The helper's scratch output is never fsynced (fuzzing timed out on reads stalled behind a build's disk
        // writes): with every file fsync failing, HDF5 still reads; a file the command itself commits still fails.
        let noSync = try runAmused(["inspect", file], environment: ["AMUSED_TEST_FAIL_FSYNC": "file"])
        #expect(noSync.status == 0, "\(noSync.stderr)")
        let scratch = try ScratchFolder()
        let export = try runAmused(
            ["export", file, "--format", "safetensors", "--out", scratch.path + "/w.safetensors"],
            environment: ["AMUSED_TEST_FAIL_FSYNC": "file"])
        #expect(export.status == 1 && export.stderr.contains("fsync"), "\(export.stderr)")
    }

    /// A 13 KB file fuzzing found on which libhdf5 1.10.8 loops, allocating as it goes (in-process: 20 GB and 53 s
    /// before it gives up): the helper's reader has a budget (address space 2 × the file + 512 MiB, CPU 20 s + 1 s per
    /// 25 MB), so the command ends with an error naming the file, well within it. The CPU budget is lowered here so
    /// that the memory cap is what stops it or, failing that, the CPU cap within seconds.
    @Test func hdf5ReadsHaveABudget() throws {
        let file = FixturePaths.repo + "/Tests/Fuzz/crashers/hdf5-budget/libhdf5-grows-without-bound.h5"
        let started = Date()
        let result = try runAmused(["inspect", file], environment: ["AMUSED_HDF5_CPU_SECONDS": "5"])
        #expect(result.status == 1 && result.stderr.contains("libhdf5-grows-without-bound.h5"), "\(result.stderr)")
        #expect(result.stderr.contains("(malformed)") || result.stderr.contains("(limit"), "\(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 30, "the reader's CPU budget (5 s here) did not hold")
    }

    /// A transformer folder holding the tiny-512 weights under the tiny-256 config (which has no down/up-sampling):
    /// the down/up-sample tensors have no parameter to fill.
    static func mismatchedTransformer(_ scratch: ScratchFolder) throws -> String {
        let folder = scratch.path + "/transformer"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: FixturePaths.path("records/tiny-512/model/transformer/diffusion_pytorch_model.safetensors"),
            toPath: folder + "/diffusion_pytorch_model.safetensors")
        try FileManager.default.copyItem(
            atPath: FixturePaths.path("records/tiny-256/model/transformer/config.json"),
            toPath: folder + "/config.json")
        return folder
    }

    /// `inspect --map` prints the import plan without reading tensor data; an incomplete plan exits 1.
    @Test func mapReportShowsTheLedger() throws {
        let result = try runAmused(["inspect", "--map", FixturePaths.path("openmuse/tiny-512")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("== transformer: map open-muse-transformer"))
        #expect(
            result.stdout.contains(
                "ffn.wi_1.weight + transformer_layers.0.ffn.wi_0.weight → transformer_layers.0.ff.net.0.proj.weight"))
        #expect(result.stdout.contains("dropped: embeddings.position_ids"))
        #expect(result.stdout.contains("missing: 0, unmapped tensors: 0, shape mismatches: 0"))
        // A transformer file under a config that does not fit it: missing and unmapped tensors, exit 1.
        let scratch = try ScratchFolder()
        let folder = try Self.mismatchedTransformer(scratch)
        let bad = try runAmused(["inspect", "--map", folder])
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("unmapped: down_block.downsample.conv.weight"))
    }

    /// `import FOLDER --dry-run` prints the plan and the verdict and writes nothing; `import FOLDER --out DIR`
    /// imports an open-muse checkpoint as a diffusers folder; weights with tensors the config does not explain fail
    /// (exit 1) naming the first, unless --allow-unmapped. The older spelling, `convert FOLDER --out DIR`, still
    /// works and says what it is now.
    @Test func importFolderDryRunAndImport() throws {
        let scratch = try ScratchFolder()
        let openMuse = FixturePaths.path("openmuse/tiny-512")
        let dry = try runAmused(["import", openMuse, "--dry-run", "--out", scratch.path + "/never"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("map open-muse-transformer") && dry.stdout.contains("Nothing was written"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/never"))
        let out = scratch.path + "/imported"
        let run = try runAmused(["import", openMuse, "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(FileManager.default.fileExists(atPath: out + "/model_index.json"))
        let old = try runAmused(["convert", openMuse, "--out", scratch.path + "/imported-old"])
        #expect(old.status == 0, "\(old.stderr)")
        #expect(old.stderr.contains("is `amused import` now"))
        let weights =
            openMuse + "/transformer/"
            + (try #require(
                try FileManager.default
                    .contentsOfDirectory(atPath: openMuse + "/transformer").sorted().first { !$0.hasSuffix(".json") }))
        let exported = try runAmused([
            "convert", weights, "--format", "safetensors", "--out", scratch.path + "/w.safetensors",
        ])
        #expect(exported.status == 0 && exported.stderr.contains("is `amused export` now"), "\(exported.stderr)")
        // The older export spelling keeps its checks: folder options refused, --out required (usage errors, 64).
        #expect(
            try runAmused(["convert", weights, "--out", scratch.path + "/x.safetensors", "--dry-run"]).status == 64)
        #expect(try runAmused(["convert", weights, "--format", "gguf"]).status == 64)
        #expect(try runAmused(["convert", openMuse, "--format", "gguf", "--out", scratch.path + "/y"]).status == 64)
        // Without an output, `convert --dry-run` is convert's own: the bundle plan.
        let plan = try runAmused(["convert", openMuse, "--dry-run"])
        #expect(plan.status == 0 && plan.stderr.contains("quantization plan (policy int8)"), "\(plan.stderr)")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/imported-old").sorted()
                == FileManager.default.contentsOfDirectory(atPath: out).sorted())

        let folder = try Self.mismatchedTransformer(scratch)
        let bad = try runAmused(["import", folder, "--dry-run"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("[down_block.downsample.conv.weight]") && bad.stderr.contains("--allow-unmapped"))
        let allowed = try runAmused(["import", folder, "--dry-run", "--allow-unmapped"])
        #expect(allowed.status == 0, "\(allowed.stderr)")
    }

    @Test func versionNamesTheLinkedLibraries() throws {
        let result = try runAmused(["version"])
        #expect(result.status == 0)
        for library in ["json-c", "zstd", "hdf5", "blas", "cpu"] { #expect(result.stdout.contains(library)) }
        #if os(Linux)
        #expect(result.stdout.contains("(family "), "the CPU line names the family and model")
        #endif
    }
}
