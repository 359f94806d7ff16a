// Layout detection over the committed tiny pipelines, strict JSON, and the fixture manifest.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Crypto
import Foundation
import Testing

@Suite("checkpoint layout")
struct CheckpointTests {
    @Test(arguments: FixturePaths.records)
    func pipelineFolderHasEveryComponent(_ record: String) throws {
        let checkpoint = try Checkpoint(path: FixturePaths.path("records/\(record)/model"))
        #expect(checkpoint.layout == .pipeline)
        #expect(checkpoint.modelIndex?["_class_name"]?.stringValue == "AmusedPipeline")
        let classes = Dictionary(uniqueKeysWithValues: checkpoint.components.map { ($0.name, $0.className ?? "") })
        #expect(
            classes == [
                "scheduler": "AmusedScheduler", "text_encoder": "CLIPTextModelWithProjection",
                "tokenizer": "CLIPTokenizer", "transformer": "UVit2DModel", "vqvae": "VQModel",
            ])
        #expect(checkpoint.component("tokenizer")?.files.contains("vocab.json") == true)
        #expect(checkpoint.component("tokenizer")?.files.contains("merges.txt") == true)
        #expect(checkpoint.component("scheduler")?.config?["mask_token_id"]?.intValue == 64)
        let transformer = try #require(checkpoint.component("transformer")?.weights)
        #expect(transformer.infos.allSatisfy { $0.dtype == .f32 })
        // The 512-shaped model has exactly the four extra down/up-sampling tensors (docs/model-notes.md §2.7).
        let extra = transformer.names.filter { $0.contains("downsample") || $0.contains("upsample") }
        #expect(extra.count == (record == "tiny-512" ? 4 : 0))
    }

    @Test func componentFolderAndSingleFile() throws {
        let folder = FixturePaths.path("records/tiny-256/model/vqvae")
        let component = try Checkpoint(path: folder)
        #expect(component.layout == .component)
        #expect(component.components.first?.className == "VQModel")
        let file = try Checkpoint(path: folder + "/diffusion_pytorch_model.safetensors", mapData: false)
        #expect(file.layout == .file)
        #expect(file.components.first?.weights?.infos.count == component.components.first?.weights?.infos.count)
    }

    @Test func missingVariantIsAClearError() throws {
        let error = try #require(throws: ReadError.self) {
            try Checkpoint(path: FixturePaths.path("records/tiny-512/model"), variant: "fp16")
        }
        #expect(error.errorDescription!.contains("fp16"))
    }

    @Test func missingPathIsAnIOError() throws {
        let error = try #require(throws: ReadError.self) { try Checkpoint(path: "/nonexistent/amused") }
        #expect(error.family == .io)
        #expect(error.path == "/nonexistent/amused")
    }

    @Test func signaturesWithGarbageBehindThemAreMalformed() throws {
        let scratch = try ScratchFolder()
        let hdf5 = try scratch.write(
            "weights.h5", [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 0, count: 32))
        let error = try #require(throws: ReadError.self) { try openWeights(path: hdf5) }
        #expect(error.family == .malformed)
        #expect(try WeightFormat.detect(path: hdf5) == .hdf5)
        // A zip signature with no archive behind it is malformed, not a crash.
        let zip = try scratch.write("weights.bin", [0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 32))
        #expect(try WeightFormat.detect(path: zip) == .zip)
        #expect((try #require(throws: ReadError.self) { try openWeights(path: zip) }).family == .malformed)
    }
}

@Suite("strict JSON")
struct StrictJSONTests {
    func parse(_ s: String) throws -> JSONValue {
        try StrictJSONParser(path: "t.json", baseOffset: 100).parse(Array(s.utf8))
    }

    @Test func valuesAndExactNumbers() throws {
        let v = try parse(
            #" {"a":[1,-2,3.5e-3,true,false,null],"b":"x\u00e9\ud83d\ude00\n","c":18446744073709551615} "#)
        #expect(v["a"]?.arrayValue?.count == 6)
        #expect(v["a"]?.arrayValue?[2].doubleValue == 3.5e-3)
        #expect(v["b"]?.stringValue == "xé😀\n")
        #expect(v["c"]?.uint64Value == UInt64.max)
        #expect(v["a"]?.arrayValue?[1].uint64Value == nil)
    }

    @Test(arguments: [
        ("{\"a\":1,\"a\":2}", 107), ("{\"a\":01}", 105), ("[1,]", 103), ("{\"a\":1} x", 108),
        ("\"\\ud800\"", 101), ("\"\\x\"", 101), ("[1 2]", 103), ("\"a\u{01}\"", 102),
    ])
    func rejectedWithFileOffset(text: String, offset: Int) throws {
        let error = try #require(throws: ReadError.self) { try parse(text) }
        #expect(error.family == .malformed)
        #expect(error.offset == offset, "\(error.errorDescription!)")
    }

    @Test func duplicateKeysAreComparedAfterUnescaping() throws {
        let error = try #require(throws: ReadError.self) { try parse(#"{"a":1,"\u0061":2}"#) }
        #expect(error.field == "a")
    }
}

@Suite("fixtures")
struct FixtureManifestTests {
    /// The set of fixture files is pinned: every file is in MANIFEST.json with its size and SHA-256, and no file
    /// is unlisted. Re-record on purpose with Tools/make_fixtures.py.
    @Test func manifestPinsEveryFixture() throws {
        let manifest = try FixturePaths.json("MANIFEST.json")
        #expect(manifest["generator"]?.stringValue?.contains("Tools/make_fixtures.py") == true)
        #expect(manifest["versions"]?["torch"]?.stringValue == "2.9.1")
        #expect(manifest["versions"]?["diffusers"]?.stringValue == "0.35.2")
        #expect(manifest["versions"]?["transformers"]?.stringValue == "4.57.1")
        let files = try #require(manifest["files"]?.arrayValue)
        var listed = Set<String>()
        for entry in files {
            let name = try #require(entry["file"]?.stringValue)
            listed.insert(name)
            let data = try Data(contentsOf: URL(fileURLWithPath: FixturePaths.path(name)))
            #expect(data.count == entry["size"]?.intValue, "\(name)")
            let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
            #expect(digest == entry["sha256"]?.stringValue, "\(name) changed; re-record with Tools/make_fixtures.py")
        }
        let root = FixturePaths.path("")
        let onDisk = FileManager.default.enumerator(atPath: root)!.compactMap { $0 as? String }
            .filter { name in
                var isDir: ObjCBool = false
                return FileManager.default.fileExists(atPath: root + name, isDirectory: &isDir) && !isDir.boolValue
                    && name != "MANIFEST.json"
            }
        #expect(Set(onDisk) == listed)
    }

    /// Each committed test fixture stays small (under 4 MiB each, 32 MiB in all: 30 until the trained default grew to
    /// four res blocks a side, whose LoRA records have 24 more adapters); the trained default model under `models/`
    /// has its own budget: at most 20 MB of weights (its issue's limit).
    @Test func fixturesStaySmall() throws {
        let files = try #require(FixturePaths.json("MANIFEST.json")["files"]?.arrayValue)
        let entries = files.compactMap { f in
            f["file"]?.stringValue.flatMap { n in f["size"]?.intValue.map { (n, $0) } }
        }
        #expect(entries.count == files.count)
        let fixtures = entries.filter { !$0.0.hasPrefix("models/") }.map(\.1)
        #expect(fixtures.allSatisfy { $0 < 4 << 20 })
        #expect(fixtures.reduce(0, +) < 32 << 20)
        let weights = entries.filter { $0.0.hasPrefix("models/") && $0.0.hasSuffix(".safetensors") }.map(\.1)
        #expect(!weights.isEmpty && weights.reduce(0, +) <= 20_000_000)
    }
}

@Suite("format detection")
struct FormatDetectionTests {
    /// A safetensors header length whose first byte is 0x80 (the pickle PROTO opcode) is still safetensors: found by
    /// a random record whose transformer header was 0x...80 bytes long.
    @Test func safetensorsWhoseLengthStartsLikeAPickle() throws {
        let scratch = try ScratchFolder()
        var header = #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        header += String(repeating: " ", count: 128 - header.utf8.count)
        var bytes: [UInt8] = [0x80, 0, 0, 0, 0, 0, 0, 0] + Array(header.utf8) + [7]
        let named = try scratch.write("a.safetensors", bytes)
        #expect(try WeightFormat.detect(path: named) == .safetensors)
        let unnamed = try scratch.write("weights", bytes)
        #expect(try WeightFormat.detect(path: unnamed) == .safetensors)
        bytes[8] = 0x7D  // no JSON after the length: the pickle guess stands
        #expect(try WeightFormat.detect(path: try scratch.write("other", bytes)) == .legacyPickle)
    }
}
