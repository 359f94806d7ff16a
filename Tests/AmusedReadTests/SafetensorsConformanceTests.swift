// The reader and writer against files Python's safetensors wrote (Fixtures/, made by Tools/make_fixtures.py).

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("safetensors conformance")
struct SafetensorsConformanceTests {
    /// Every dtype torch writes reads back to exactly the values torch reads (dtypes.json holds them).
    @Test func everyDtypeMatchesTorch() throws {
        let file = try SafetensorsFile(path: FixturePaths.path("safetensors/dtypes.safetensors"))
        let expected = try #require(FixturePaths.json("safetensors/dtypes.json").objectValue)
        #expect(Set(file.names) == Set(expected.keys))
        #expect(file.metadataValue("format") == "pt")
        for (name, spec) in expected.entries {
            let tensor = try file.tensor(named: name)
            #expect(tensor.isMapped, "reading must not copy: \(name)")
            #expect(tensor.shape == spec["shape"]!.arrayValue!.map { $0.intValue! }, "\(name)")
            #expect(tensor.dtype.torchName == spec["dtype"]!.stringValue!, "\(name)")
            let values = spec["values"]!.arrayValue!
            if tensor.dtype.isFloatingPoint {
                let got = try tensor.doubles()
                for (g, e) in zip(got, values) {
                    switch e {
                    case .string("inf"): #expect(g == .infinity, "\(name)")
                    case .string("-inf"): #expect(g == -.infinity, "\(name)")
                    default:
                        // Exact: torch's float64 view of the stored value, printed with repr (round-trip exact).
                        #expect(g == e.doubleValue!, "\(name): \(g) vs \(e.serialized)")
                        if e.doubleValue == 0 { #expect(g.sign == (e.serialized.hasPrefix("-") ? .minus : .plus)) }
                    }
                }
            } else if tensor.dtype == .u64 {
                let got = try tensor.int64s().map { UInt64(bitPattern: $0) }
                #expect(got == values.map { UInt64($0.stringValue!)! }, "\(name)")
            } else if tensor.dtype == .bool {
                #expect(try tensor.int64s() == values.map { Int64($0.intValue!) }, "\(name)")
            } else {
                #expect(try tensor.int64s() == values.map { Int64($0.stringValue!)! }, "\(name)")
            }
        }
    }

    /// Our float32 → f16/bf16 rounding gives the same bits as torch's `.to(float16/bfloat16)` on the fixture values.
    @Test func halfAndBFloatRoundingMatchesTorch() throws {
        let file = try SafetensorsFile(path: FixturePaths.path("safetensors/dtypes.safetensors"))
        let source = try file.tensor(named: "f32").floats()
        let half = try file.tensor(named: "f16").withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let bf = try file.tensor(named: "bf16").withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        #expect(source.map(FloatBits.floatToHalf) == half)
        #expect(source.map(FloatBits.floatToBFloat) == bf)
        let converted = try file.tensor(named: "f32").converted(to: .f16)
        #expect(try converted.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) } == half)
    }

    /// The writer reproduces Python's files byte for byte (same order, header and padding), so Python's
    /// safetensors reads what we write exactly as it reads its own files.
    @Test(arguments: [
        "safetensors/dtypes.safetensors",
        "records/tiny-256/model/transformer/diffusion_pytorch_model.safetensors",
        "records/tiny-512/model/vqvae/diffusion_pytorch_model.safetensors",
        "records/tiny-256/record.safetensors",
    ])
    func writerIsByteIdenticalToPython(_ relative: String) throws {
        let original = FixturePaths.path(relative)
        let file = try SafetensorsFile(path: original)
        let tensors = try file.names.map { ($0, try file.tensor(named: $0)) }
        let scratch = try ScratchFolder()
        let out = scratch.path + "/copy.safetensors"
        try SafetensorsWriter.write(tensors, metadata: file.metadata.map { ($0.key, $0.value) }, to: out)
        let a = try Data(contentsOf: URL(fileURLWithPath: original))
        let b = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(a == b)
        #expect(try scratch.listing() == ["copy.safetensors"], "no temporary file may be left behind")
    }

    /// A failed write leaves neither the destination nor a temporary file.
    @Test func failedWriteLeavesNothing() throws {
        let scratch = try ScratchFolder()
        let t = try Tensor(floats: [1, 2], shape: [2])
        #expect(throws: ReadError.self) {
            try SafetensorsWriter.write([("a", t), ("a", t)], to: scratch.path + "/x.safetensors")
        }
        #expect(try scratch.listing().isEmpty)
    }
}

@Suite("sharded safetensors")
struct ShardedTests {
    /// Writes two shards of a small state dict and returns the folder.
    func shards(_ scratch: ScratchFolder) throws -> [String: Tensor] {
        let tensors = try [
            "a.weight": Tensor(floats: [1, 2, 3, 4], shape: [2, 2]),
            "b.weight": Tensor(floats: [5, 6], shape: [2]),
            "c.bias": Tensor(floats: [7], shape: [1]),
        ]
        try SafetensorsWriter.write(
            [("a.weight", tensors["a.weight"]!)], to: scratch.path + "/m-00001-of-00002.safetensors")
        try SafetensorsWriter.write(
            [("b.weight", tensors["b.weight"]!), ("c.bias", tensors["c.bias"]!)],
            to: scratch.path + "/m-00002-of-00002.safetensors")
        return tensors
    }

    func index(_ map: [String: String], total: Int? = 28) -> [UInt8] {
        let entries = map.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
        let meta = total.map { "\"metadata\":{\"total_size\":\($0)}," } ?? ""
        return Array("{\(meta)\"weight_map\":{\(entries)}}".utf8)
    }

    @Test func readsThroughTheIndex() throws {
        let scratch = try ScratchFolder()
        let tensors = try shards(scratch)
        let path = try scratch.write(
            "m.safetensors.index.json",
            index([
                "a.weight": "m-00001-of-00002.safetensors", "b.weight": "m-00002-of-00002.safetensors",
                "c.bias": "m-00002-of-00002.safetensors",
            ]))
        let sharded = try ShardedSafetensors(indexPath: path)
        #expect(Set(sharded.names) == Set(tensors.keys))
        for (name, t) in tensors { #expect(try sharded.tensor(named: name).floats() == t.floats()) }
    }

    @Test func staleIndexMissingATensorIsRejectedByName() throws {
        let scratch = try ScratchFolder()
        _ = try shards(scratch)
        let path = try scratch.write(
            "m.safetensors.index.json",
            index(
                [
                    "a.weight": "m-00001-of-00002.safetensors", "b.weight": "m-00002-of-00002.safetensors",
                ], total: nil))
        let error = try #require(throws: ReadError.self) { try ShardedSafetensors(indexPath: path) }
        #expect(error.family == .inconsistent)
        #expect(error.field == "c.bias")
        #expect(error.errorDescription!.contains("stale index"))
    }

    @Test func indexNamingAnAbsentTensorIsRejectedByName() throws {
        let scratch = try ScratchFolder()
        _ = try shards(scratch)
        let path = try scratch.write(
            "m.safetensors.index.json",
            index(
                [
                    "a.weight": "m-00001-of-00002.safetensors", "b.weight": "m-00002-of-00002.safetensors",
                    "c.bias": "m-00002-of-00002.safetensors", "d.gone": "m-00001-of-00002.safetensors",
                ], total: nil))
        let error = try #require(throws: ReadError.self) { try ShardedSafetensors(indexPath: path) }
        #expect(error.field == "d.gone")
    }

    @Test func tensorInTheWrongShardOrWrongTotalIsRejected() throws {
        let scratch = try ScratchFolder()
        _ = try shards(scratch)
        let wrongShard = try scratch.write(
            "w.safetensors.index.json",
            index(
                [
                    "a.weight": "m-00002-of-00002.safetensors", "b.weight": "m-00002-of-00002.safetensors",
                    "c.bias": "m-00002-of-00002.safetensors",
                ], total: nil))
        #expect(throws: ReadError.self) { try ShardedSafetensors(indexPath: wrongShard) }
        let wrongTotal = try scratch.write(
            "t.safetensors.index.json",
            index(
                [
                    "a.weight": "m-00001-of-00002.safetensors", "b.weight": "m-00002-of-00002.safetensors",
                    "c.bias": "m-00002-of-00002.safetensors",
                ], total: 99))
        let error = try #require(throws: ReadError.self) { try ShardedSafetensors(indexPath: wrongTotal) }
        #expect(error.field == "metadata.total_size")
    }

    @Test(arguments: ["../outside.safetensors", "/etc/passwd", "sub/dir.safetensors", ".."])
    func shardPathsAreNeverFollowed(_ shard: String) throws {
        let scratch = try ScratchFolder()
        let path = try scratch.write("m.safetensors.index.json", index(["a": shard], total: nil))
        let error = try #require(throws: ReadError.self) { try ShardedSafetensors(indexPath: path) }
        #expect(error.family == .forbidden)
    }
}
