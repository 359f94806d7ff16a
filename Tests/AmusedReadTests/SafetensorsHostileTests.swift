// The safetensors part of docs/hostile-inputs.md (§6.1), one test per case, plus the positive
// controls of §6.9 that strictness must not break.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

/// Builds a safetensors file: 8-byte length, the header text as given, then `data`.
func safetensorsBytes(header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (length ?? UInt64(h.count)).littleEndian) { out += $0 }
    return out + h + data
}

/// Writes the bytes, opens them, and returns the error the reader raised.
func readError(_ bytes: [UInt8], _ scratch: ScratchFolder, name: String = "case.safetensors") throws -> ReadError? {
    let path = try scratch.write(name, bytes)
    do {
        _ = try SafetensorsFile(path: path)
        return nil
    } catch {
        return error
    }
}

struct HostileCase: CustomTestStringConvertible, Sendable {
    let id: String
    let bytes: [UInt8]
    let family: ReadError.Family
    let mentions: String?
    var testDescription: String { id }
}

let f32x2 = #"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#

let hostileCases: [HostileCase] = {
    var cases: [HostileCase] = []
    func add(_ id: String, _ bytes: [UInt8], _ family: ReadError.Family, _ mentions: String? = nil) {
        cases.append(HostileCase(id: id, bytes: bytes, family: family, mentions: mentions))
    }
    for n in 0...7 { add("ST-01 \(n) bytes", [UInt8](repeating: 0x7B, count: n), .truncated) }
    add("ST-02 N = 2^64-1", safetensorsBytes(header: "{}", length: .max), .limitExceeded)
    add("ST-02 N > size-8", safetensorsBytes(header: "{}", length: 3), .truncated)
    add("ST-03 N = 10 GB in a tiny file", safetensorsBytes(header: "{}", length: 10_000_000_000), .limitExceeded)
    add(
        "ST-05 invalid UTF-8", safetensorsBytes(header: "{\"a\u{FF}\":1}").map { $0 == 0xC3 ? 0xFF : $0 }, .malformed,
        "UTF-8")
    for (i, h) in ["not json", "[1,2]", "\"string\"", "{\"a\":", "{", ""].enumerated() {
        add("ST-06 not an object \(i)", safetensorsBytes(header: h), .malformed)
    }
    for (i, h) in [
        #"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},}"#, "{/*c*/}", "\u{FEFF}{}",
        #"{"__metadata__":{"x":NaN}}"#, #"{"__metadata__":{"x":"\ud800"}}"#,
        #"{"__metadata__":{"x":'single'}}"#,
    ].enumerated() {
        add("ST-07 lax JSON \(i)", safetensorsBytes(header: h), .malformed)
    }
    add(
        "ST-08 duplicate tensor",
        safetensorsBytes(header: "{\"w\":\(f32x2),\"w\":\(f32x2)}", data: .init(repeating: 0, count: 8)),
        .malformed, "duplicate key \"w\"")
    add(
        "ST-09 duplicate __metadata__", safetensorsBytes(header: #"{"__metadata__":{},"__metadata__":{}}"#),
        .malformed, "duplicate")
    add(
        "ST-09 tensor named __metadata__",
        safetensorsBytes(
            header: "{\"__metadata__\":\(f32x2)}",
            data: .init(repeating: 0, count: 8)), .malformed)
    for v in ["1", "{}", "null", "[\"a\"]"] {
        add("ST-10 metadata value \(v)", safetensorsBytes(header: "{\"__metadata__\":{\"k\":\(v)}}"), .malformed)
    }
    for d in ["F128", "f32", ""] {
        add(
            "ST-11 dtype \(d)",
            safetensorsBytes(
                header: "{\"w\":{\"dtype\":\"\(d)\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                data: .init(repeating: 0, count: 8)), .unsupported, "unsupported dtype")
    }
    for s in ["-1", "1.5", "1e3", "18446744073709551616", "\"2\"", "null"] {
        add(
            "ST-12 shape element \(s)",
            safetensorsBytes(
                header: "{\"w\":{\"dtype\":\"F32\",\"shape\":[\(s)],\"data_offsets\":[0,4]}}",
                data: .init(repeating: 0, count: 4)), .malformed)
    }
    for o in ["[0]", "[0,4,8]", "[0,4.0]", "[\"0\",4]", "4"] {
        add(
            "ST-13 data_offsets \(o)",
            safetensorsBytes(
                header: "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\(o)}}",
                data: .init(repeating: 0, count: 4)), .malformed)
    }
    add(
        "ST-14 shape product overflows",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[2,9223372036854775808],"data_offsets":[0,4]}}"#,
            data: .init(repeating: 0, count: 4)), .arithmeticOverflow)
    add(
        "ST-14 product of fitting dims overflows",
        safetensorsBytes(
            header: #"{"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
            data: .init(repeating: 0, count: 4)), .arithmeticOverflow)
    add(
        "ST-15 elements × width overflows",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}"#,
            data: .init(repeating: 0, count: 8)), .arithmeticOverflow)
    add(
        "ST-16 reversed offsets",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, data: .init(repeating: 0, count: 8)),
        .inconsistent, "before begin")
    add(
        "ST-17 hole at start",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: .init(repeating: 0, count: 8)),
        .inconsistent, "hole")
    add(
        "ST-18 hole between tensors",
        safetensorsBytes(
            header:
                #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            data: .init(repeating: 0, count: 12)), .inconsistent, "hole")
    add(
        "ST-18 overlapping tensors",
        safetensorsBytes(
            header:
                #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            data: .init(repeating: 0, count: 12)), .inconsistent, "overlaps")
    add(
        "ST-20 span ≠ elements × size",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)),
        .inconsistent, "needs 12")
    add(
        "ST-21 data section short",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: .init(repeating: 0, count: 8)),
        .truncated)
    add(
        "trailing bytes after the last tensor",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: .init(repeating: 0, count: 8)),
        .inconsistent, "not described")
    add(
        "ST-23 F4 count not filling bytes",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, data: .init(repeating: 0, count: 2)),
        .inconsistent, "whole bytes")
    add(
        "ST-23 F6 count not filling bytes",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F6_E2M3","shape":[3],"data_offsets":[0,3]}}"#, data: .init(repeating: 0, count: 3)),
        .inconsistent, "whole bytes")
    add(
        "ST-24 empty name", safetensorsBytes(header: "{\"\":\(f32x2)}", data: .init(repeating: 0, count: 8)),
        .malformed, "empty")
    add(
        "ST-24 control character",
        safetensorsBytes(header: "{\"a\\u0000b\":\(f32x2)}", data: .init(repeating: 0, count: 8)),
        .malformed, "control")
    add(
        "ST-24 name over 1 KiB",
        safetensorsBytes(
            header: "{\"\(String(repeating: "x", count: 1025))\":\(f32x2)}",
            data: .init(repeating: 0, count: 8)), .limitExceeded)
    let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
    add("ST-26 depth 10 000", safetensorsBytes(header: "{\"__metadata__\":{\"k\":\(deep)}}"), .malformed, "deeper")
    add(
        "unknown tensor field",
        safetensorsBytes(
            header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#,
            data: .init(repeating: 0, count: 4)),
        .malformed, "unknown field")
    return cases
}()

@Suite("safetensors hostile inputs")
struct SafetensorsHostileTests {
    @Test(arguments: hostileCases)
    func rejected(_ c: HostileCase) throws {
        let scratch = try ScratchFolder()
        let error = try #require(try readError(c.bytes, scratch))
        #expect(error.family == c.family, "\(error.errorDescription ?? "")")
        #expect(error.path.hasSuffix("case.safetensors"))
        #expect(error.offset != nil || error.field != nil, "an error must locate the problem")
        if let m = c.mentions { #expect(error.errorDescription!.contains(m), "\(error.errorDescription!)") }
    }

    /// ST-04: a header over the 100 MB cap in a file that really is that large is refused from the length alone.
    @Test func headerOverCapRejectedWithoutReadingIt() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/big.safetensors"
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.write(contentsOf: safetensorsBytes(header: "", length: 100_000_001))
        try handle.truncate(atOffset: 100_000_010)  // sparse: no 100 MB written
        try handle.close()
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted an over-cap header")
        } catch {
            #expect(error.family == .limitExceeded)
            #expect(error.offset == 0)
        }
    }

    /// ST-27: a file truncated by another process after opening gives an io error instead of a SIGBUS.
    @Test func truncatedWhileOpenIsAnError() throws {
        let scratch = try ScratchFolder()
        let data = (0..<1024).flatMap { withUnsafeBytes(of: Float($0)) { Array($0) } }
        let path = try scratch.write(
            "t.safetensors",
            safetensorsBytes(
                header: #"{"w":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#, data: data))
        let file = try SafetensorsFile(path: path)
        #expect(truncate(path, 100) == 0)
        #expect(throws: ReadError.self) { _ = try file.tensor(named: "w") }
        let fresh = try SafetensorsFile(
            path: try scratch.write(
                "u.safetensors",
                safetensorsBytes(
                    header: #"{"w":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#, data: data)))
        let tensor = try fresh.tensor(named: "w")
        #expect(truncate(scratch.path + "/u.safetensors", 100) == 0)
        #expect(throws: TensorError.self) { _ = try tensor.floats() }
    }

    /// §6.9 positive controls: strictness must not break files real writers produce.
    @Test(arguments: [
        ("{}", 0), ("{}      ", 0), ("  \n{}", 0), (#"{"__metadata__":{"format":"pt"}}"#, 0),
        (#"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, 1),
        (
            #"{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
            2
        ),
        (
            #"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[1],"data_offsets":[3,7]}}"#,
            2
        ),
        (
            #"{"p":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"q":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[2,5]}}"#,
            2
        ),
        (#"{"w/../x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#, 1),
    ])
    func accepted(header: String, tensors: Int) throws {
        let scratch = try ScratchFolder()
        var data: [UInt8] = []
        if let obj = try StrictJSONParser(path: "h").parse(Array(header.utf8)).objectValue {
            let ends = obj.entries.compactMap { $0.value["data_offsets"]?.arrayValue?.last?.intValue }
            data = [UInt8](repeating: 0, count: ends.max() ?? 0)
        }
        let path = try scratch.write("ok.safetensors", safetensorsBytes(header: header, data: data))
        let file = try SafetensorsFile(path: path)
        #expect(file.infos.count == tensors)
        for info in file.infos { _ = try file.tensor(named: info.name) }
    }
}
