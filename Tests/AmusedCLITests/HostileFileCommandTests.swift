// Hostile files through the command line, as a user meets them: `inspect` and `convert` of each exit 1 with an
// error naming the file, leave nothing behind, and stay within the memory rule of docs/hostile-inputs.md — peak RSS
// at most twice the file's size plus 256 MiB — measured on the child process (its VmHWM at exit).

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `amused` with `arguments` as a child; its exit status, stderr and peak resident memory in bytes — its own
/// (VmHWM, written at exit through AMUSED_PEAK_RSS_FILE): wait4's ru_maxrss would include this test process's memory
/// at spawn time, as posix_spawn runs the child in the parent's address space until it executes.
func runAmusedMeasured(_ arguments: [String], in folder: String) throws -> (status: Int32, stderr: String, peakRSS: Int)
{
    let binary = try amusedBinary()
    let errPath = folder + "/stderr.txt", peakPath = folder + "/peak.txt"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv = ([binary] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    var pairs: [String] = ProcessInfo.processInfo.environment.compactMap { key, value in
        key == "AMUSED_PEAK_RSS_FILE" ? nil : key + "=" + value
    }
    pairs.append("AMUSED_PEAK_RSS_FILE=" + peakPath)
    let environment: [UnsafeMutablePointer<CChar>?] = pairs.map { strdup($0) } + [nil]
    defer { for p in environment { free(p) } }
    let spawned = posix_spawn(&pid, binary, &actions, nil, argv, environment)
    try #require(spawned == 0, "posix_spawn failed: \(spawned)")
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exited = status & 0x7F == 0
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    let peakKiB = (try? String(contentsOfFile: peakPath, encoding: .utf8)).flatMap {
        Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
    }
    try? FileManager.default.removeItem(atPath: errPath)
    try? FileManager.default.removeItem(atPath: peakPath)
    try #require(peakKiB != nil, "the child wrote no peak memory (it died?): \(stderr)")
    // A signal is reported as 128 + its number, as a shell would.
    return (exited ? (status >> 8) & 0xFF : 128 + (status & 0x7F), stderr, peakKiB! * 1024)
}

/// The memory rule: anonymous memory at most twice the file plus 256 MiB (RSS here, mapped pages included).
func memoryBudget(fileBytes: Int) -> Int { 2 * fileBytes + (256 << 20) }

struct HostileFile: CustomTestStringConvertible, Sendable {
    let id: String
    let file: String
    let bytes: [UInt8]
    var testDescription: String { id }
}

/// Files whose size claims would drive allocations: each refused before the claim is believed.
let sizeClaims: [HostileFile] = {
    var files: [HostileFile] = []
    // A GGUF of 24 MB holding a u8 metadata array of 24 million elements (a GGUFValue each would be 576 MB).
    let n = 24_000_000
    files.append(
        HostileFile(
            id: "GGUF u8 array of 2.4e7 elements", file: "a.gguf",
            bytes: ggufBytes(
                kvCount: 1, kv: ggufString("a") + le32(9) + le32(0) + le64(UInt64(n)) + [UInt8](repeating: 7, count: n))
        ))
    // A safetensors header of 24 MB holding one shape of 12 million dimensions.
    var header = Array(#"{"t":{"dtype":"F32","data_offsets":[0,4],"shape":["#.utf8)
    header += Array(repeating: Array("1,".utf8), count: 12_000_000).flatMap { $0 } + Array("1]}}".utf8)
    files.append(
        HostileFile(
            id: "safetensors shape of 1.2e7 dimensions", file: "a.safetensors",
            bytes: le64(UInt64(header.count)) + header + [0, 0, 0, 0]))
    // A zip whose data.pkl claims 1 GB from 1 MB of (not really) deflated bytes: refused before inflating.
    files.append(
        HostileFile(
            id: "data.pkl claiming 1 GB deflated", file: "a.pt",
            bytes: zipBytes([
                Member(name: "archive/data.pkl", data: [], method: 8, compressed: [UInt8](repeating: 0, count: 1 << 20))
            ]).patchingUncompressedSize(of: "archive/data.pkl", to: 1_000_000_000)))
    // A PyTorch view of 2^40 float32 elements with stride 0 over one element (convert used to try 4 TB).
    files += knownCrashes.map { HostileFile(id: $0.id, file: $0.file, bytes: $0.bytes) }
    return files
}()

extension [UInt8] {
    /// The zip with the uncompressed size of member `name` replaced in its local header and directory entry.
    func patchingUncompressedSize(of name: String, to size: Int) -> [UInt8] {
        var out = self
        let nameBytes = Array(name.utf8)
        for (signature, sizeOffset, nameOffset) in [(0x0403_4B50, 22, 30), (0x0201_4B50, 24, 46)] {
            let sig = le32(signature)
            for i in 0..<(out.count - nameOffset - nameBytes.count)
            where Array(out[i..<(i + 4)]) == sig
                && Array(out[(i + nameOffset)..<(i + nameOffset + nameBytes.count)]) == nameBytes
            {
                out.replaceSubrange((i + sizeOffset)..<(i + sizeOffset + 4), with: le32(size))
            }
        }
        return out
    }
}

@Suite("hostile files through the command line", .serialized)
struct HostileFileCommandTests {
    @Test(arguments: sizeClaims)
    func refusedWithinBudget(_ c: HostileFile) throws {
        let scratch = try ScratchFolder()
        let path = try scratch.write(c.file, c.bytes)
        let budget = memoryBudget(fileBytes: c.bytes.count)
        let inspect = try runAmusedMeasured(["inspect", path], in: scratch.path)
        #expect(inspect.status == 1, "\(c.id): inspect exited \(inspect.status): \(inspect.stderr)")
        #expect(inspect.stderr.contains(path), "\(c.id): \(inspect.stderr)")
        #expect(inspect.peakRSS <= budget, "\(c.id): inspect peaked at \(inspect.peakRSS >> 20) MiB")
        let out = scratch.path + "/out.safetensors"
        let convert = try runAmusedMeasured(
            ["export", path, "--format", "safetensors", "--out", out], in: scratch.path)
        #expect(convert.status == 1, "\(c.id): convert exited \(convert.status): \(convert.stderr)")
        #expect(convert.stderr.contains(path), "\(c.id): \(convert.stderr)")
        #expect(convert.peakRSS <= budget, "\(c.id): convert peaked at \(convert.peakRSS >> 20) MiB")
        // Nothing written, no temporary left behind.
        #expect(try scratch.listing() == [c.file], "\(c.id)")
    }

    /// A legitimate compressed archive (numpy.savez_compressed) of 1.3 MB holding a 256 MB array: `inspect` reads only
    /// its header (it used to inflate every member, twice over: 512 MB), and `convert` holds the one array.
    @Test func inspectingACompressedArchiveReadsHeadersOnly() throws {
        let scratch = try ScratchFolder()
        let count = 1 + 258 * 1_040_000
        let npy = npyBytes(header: "{'descr': '|u1', 'fortran_order': False, 'shape': (\(count),), }", data: [])
        let deflated = deflateZeros(count, after: npy)
        let head = npy.withUnsafeBytes { CRC32.checksum($0) }
        let crc = [UInt8](repeating: 0, count: count).withUnsafeBytes { CRC32.checksum($0, continuing: head) }
        let zip = zipBytes([Member(name: "zeros.npy", data: [], method: 8, compressed: deflated, crc: crc)])
            .patchingUncompressedSize(of: "zeros.npy", to: npy.count + count)
        let path = try scratch.write("a.npz", zip)
        let inspect = try runAmusedMeasured(["inspect", path], in: scratch.path)
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.peakRSS <= memoryBudget(fileBytes: zip.count), "inspect peaked at \(inspect.peakRSS >> 20) MiB")
        let out = scratch.path + "/out.safetensors"
        let convert = try runAmusedMeasured(
            ["export", path, "--format", "safetensors", "--out", out], in: scratch.path)
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(try FileManager.default.attributesOfItem(atPath: out)[.size] as? Int ?? 0 > count)
    }

    /// The gate measures what it claims: a legitimate 24 MB safetensors file read by `convert` shows at least its
    /// own size in the child's peak RSS (so a budget check over RSS is not vacuous).
    @Test func measurementSeesTheData() throws {
        let scratch = try ScratchFolder()
        let count = 6_000_000
        let header = Array(#"{"t":{"dtype":"F32","shape":[\#(count)],"data_offsets":[0,\#(count * 4)]}}"#.utf8)
        let padded = header + [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        let path = try scratch.write(
            "a.safetensors",
            le64(UInt64(padded.count)) + padded
                + [UInt8](repeating: 0x3F, count: count * 4))
        let result = try runAmusedMeasured(
            ["export", path, "--format", "gguf", "--out", scratch.path + "/b.gguf"],
            in: scratch.path)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.peakRSS >= count * 4, "peak \(result.peakRSS)")
    }
}
