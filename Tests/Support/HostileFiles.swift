// Hostile files built byte by byte: zip archives, torch.save pickles, .npy members and GGUF files, for the tests
// of every reader (docs/hostile-inputs.md) and for the fuzzers' seed corpora.

import AmusedCore
import AmusedRead

/// A zip member for `zipBytes`.
public struct Member {
    public var name: String
    public var data: [UInt8]
    public var method: UInt16 = 0
    public var compressed: [UInt8]? = nil
    public var flags: UInt16 = 0
    public var crc: UInt32? = nil
    public var localName: String? = nil

    /// A member `name` holding `data` (stored unless `method`/`compressed` say otherwise).
    public init(
        name: String, data: [UInt8], method: UInt16 = 0, compressed: [UInt8]? = nil, flags: UInt16 = 0,
        crc: UInt32? = nil, localName: String? = nil
    ) {
        self.name = name
        self.data = data
        self.method = method
        self.compressed = compressed
        self.flags = flags
        self.crc = crc
        self.localName = localName
    }
}

/// Little-endian bytes.
public func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
public func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
public func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }

/// A zip archive; `countOverride` replaces the EOCD entry count.
public func zipBytes(_ members: [Member], countOverride: Int? = nil) -> [UInt8] {
    var out: [UInt8] = []
    var central: [UInt8] = []
    for m in members {
        let payload = m.compressed ?? m.data
        let crc = Int(m.crc ?? CRC32.checksum(m.data))
        let offset = out.count
        let localName = Array((m.localName ?? m.name).utf8)
        out +=
            le32(0x0403_4B50) + le16(20) + le16(Int(m.flags)) + le16(Int(m.method)) + le16(0) + le16(0) + le32(crc)
            + le32(payload.count) + le32(m.data.count) + le16(localName.count) + le16(0) + localName + payload
        let name = Array(m.name.utf8)
        central +=
            le32(0x0201_4B50) + le16(20) + le16(20) + le16(Int(m.flags)) + le16(Int(m.method)) + le16(0) + le16(0)
            + le32(crc) + le32(payload.count) + le32(m.data.count) + le16(name.count) + le16(0) + le16(0) + le16(0)
            + le16(0) + le32(0) + le32(offset) + name
    }
    let cdOffset = out.count
    out += central
    let count = countOverride ?? members.count
    out +=
        le32(0x0605_4B50) + le16(0) + le16(0) + le16(min(count, 0xFFFF)) + le16(min(count, 0xFFFF))
        + le32(central.count) + le32(cdOffset) + le16(0)
    return out
}

/// A torch.save-like archive around `pickle` (protocol 2) with storage records.
public func torchArchive(
    _ pickle: [UInt8], records: [String: [UInt8]] = ["0": [UInt8](repeating: 0, count: 16)],
    extra: [Member] = [], byteorder: String = "little"
) -> [UInt8] {
    var members = [
        Member(name: "archive/data.pkl", data: pickle), Member(name: "archive/byteorder", data: Array(byteorder.utf8)),
    ]
    for (k, v) in records.sorted(by: { $0.key < $1.key }) { members.append(Member(name: "archive/data/\(k)", data: v)) }
    return zipBytes(members + extra)
}

/// Pickle pieces.
public enum P {
    public static func global(_ module: String, _ name: String) -> [UInt8] {
        [0x63] + Array("\(module)\n\(name)\n".utf8)
    }
    public static func str(_ s: String) -> [UInt8] { [0x58] + le32(s.utf8.count) + Array(s.utf8) }
    public static func int(_ v: Int) -> [UInt8] { [0x4A] + le32(v) }
    /// An integer as torch writes it: BININT when it fits in 32 bits, LONG1 (8 bytes) otherwise.
    public static func integer(_ v: Int) -> [UInt8] {
        Int32(exactly: v) != nil ? int(v) : [0x8A, 8] + le64(UInt64(bitPattern: Int64(v)))
    }
    public static let mark: [UInt8] = [0x28], tuple: [UInt8] = [0x74], reduce: [UInt8] = [0x52], stop: [UInt8] = [0x2E]
    public static let proto: [UInt8] = [0x80, 0x02], emptyTuple: [UInt8] = [0x29], emptyDict: [UInt8] = [0x7D]
    public static let setitems: [UInt8] = [0x75]
    public static let orderedDict = global("collections", "OrderedDict") + emptyTuple + reduce
    /// ('storage', torch.FloatStorage, key, 'cpu', numel) as a persistent id.
    public static func storage(_ key: String = "0", numel: Int = 4, type: String = "FloatStorage") -> [UInt8] {
        mark + str("storage") + global("torch", type) + str(key) + str("cpu") + int(numel) + tuple + [0x51]
    }
    /// _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).
    public static func tensor(
        offset: Int = 0, size: [Int] = [4], stride: [Int] = [1], key: String = "0", numel: Int = 4,
        hooks: [UInt8] = orderedDict, type: String = "FloatStorage"
    ) -> [UInt8] {
        global("torch._utils", "_rebuild_tensor_v2") + mark + storage(key, numel: numel, type: type) + integer(offset)
            + mark + size.flatMap(integer) + tuple + mark + stride.flatMap(integer) + tuple + [0x89] + hooks + tuple
            + reduce
    }
    /// A state dict {"w": body}.
    public static func stateDict(_ body: [UInt8]) -> [UInt8] {
        proto + orderedDict + mark + str("w") + body + setitems + stop
    }
}

/// A `.npy` array: magic, version, `header` padded as NumPy pads it, then `data`.
public func npyBytes(header: String, data: [UInt8], version: UInt8 = 1, headerLength: Int? = nil) -> [UInt8] {
    var h = Array(header.utf8)
    let pad = (64 - (10 + h.count + 1) % 64) % 64
    h += [UInt8](repeating: 0x20, count: pad) + [0x0A]
    return [0x93] + Array("NUMPY".utf8) + [version, 0] + le16(headerLength ?? h.count) + h + data
}

/// A GGUF v3 file: metadata and tensor records given as raw bytes, data aligned to 32.
public func ggufBytes(
    version: Int = 3, tensorCount: UInt64 = 0, kvCount: UInt64 = 0, kv: [UInt8] = [], tensors: [UInt8] = [],
    data: [UInt8] = []
) -> [UInt8] {
    var out = Array("GGUF".utf8) + le32(version) + le64(tensorCount) + le64(kvCount) + kv + tensors
    out += [UInt8](repeating: 0, count: (32 - out.count % 32) % 32)
    return out + data
}

/// A GGUF string: u64 length, bytes.
public func ggufString(_ s: String) -> [UInt8] { le64(UInt64(s.utf8.count)) + Array(s.utf8) }

/// A GGUF tensor record.
public func ggufTensor(_ name: String, dims: [UInt64], type: Int = 0, offset: UInt64 = 0) -> [UInt8] {
    ggufString(name) + le32(dims.count) + dims.flatMap(le64) + le32(type) + le64(offset)
}

/// The files that crashed `amused` before the size arithmetic was made checked as a class (each a trap, a stack
/// overflow or a multi-terabyte allocation): id, file name, bytes and the error family each must give instead. The
/// sixth, a bundle, is built from a real bundle in the pack tests.
public let knownCrashes: [(id: String, file: String, bytes: [UInt8], family: ReadError.Family)] = [
    // _rebuild_tensor_v2(storage, 0, (2,), (2**63-1,), False, OrderedDict()): the view's last element overflows.
    (
        "crash 1: stride Int.max", "a.pt", torchArchive(P.stateDict(P.tensor(size: [2], stride: [Int.max]))),
        .inconsistent
    ),
    // sizes (2**31, 2**31), strides (0, 0) over one element: 2^62 float32 elements overflow the byte count.
    (
        "crash 2: 2^62 elements of zero stride", "a.pt",
        torchArchive(
            P.stateDict(P.tensor(size: [1 << 31, 1 << 31], stride: [0, 0], numel: 1)),
            records: ["0": [0, 0, 0, 0]]), .arithmeticOverflow
    ),
    // size (2**40,), stride (0,): a legal expanded view whose copy would take 4 TB.
    (
        "crash 2b: a 4 TB expanded view", "a.pt",
        torchArchive(P.stateDict(P.tensor(size: [1 << 40], stride: [0], numel: 1)), records: ["0": [0, 0, 0, 0]]),
        .limitExceeded
    ),
    // 10^6 nested one-tuples: freeing them recursed once per level.
    (
        "crash 3: 10^6 nested tuples", "a.pt",
        torchArchive(P.proto + P.emptyTuple + [UInt8](repeating: 0x85, count: 1_000_000) + P.stop), .limitExceeded
    ),
    // A Q8_0 tensor [0, 2^61, 2^61]: validated in file order, multiplied in reverse.
    (
        "crash 4: GGUF dims [0, 2^61, 2^61]", "a.gguf",
        ggufBytes(tensorCount: 1, tensors: ggufTensor("t", dims: [0, 1 << 61, 1 << 61], type: 8)), .arithmeticOverflow
    ),
    // Fortran order, shape (0, 10**17, 10**17): strides overflowed although the zero let the size check pass.
    (
        "crash 5: Fortran (0, 10^17, 10^17)", "a.npz",
        zipBytes([
            Member(
                name: "a.npy",
                data: npyBytes(
                    header:
                        "{'descr': '<f4', 'fortran_order': True, 'shape': (0, 100000000000000000, 100000000000000000), }",
                    data: []))
        ]), .arithmeticOverflow
    ),
]

/// Raw DEFLATE data for `prefix` (a stored block, when not empty) followed by `zeros` zero bytes (a fixed-Huffman
/// block of one literal and length-258 matches; `zeros` must be 1 + 258·k): about 1 KB per 160 KB of output, so a
/// small file can declare a large member honestly.
public func deflateZeros(_ zeros: Int, after prefix: [UInt8] = []) -> [UInt8] {
    precondition((zeros - 1) % 258 == 0 && prefix.count < 65_536)
    var out: [UInt8] = []
    if !prefix.isEmpty {
        out = [0x00] + le16(prefix.count) + le16(~prefix.count & 0xFFFF) + prefix  // BFINAL 0, stored, byte-aligned
    }
    var buffer = 0, count = 0
    func bits(_ value: Int, _ n: Int) {  // LSB-first
        buffer |= value << count
        count += n
        while count >= 8 {
            out.append(UInt8(buffer & 0xFF))
            buffer >>= 8
            count -= 8
        }
    }
    func huffman(_ code: Int, _ n: Int) {
        for i in stride(from: n - 1, through: 0, by: -1) { bits((code >> i) & 1, 1) }
    }
    bits(1, 1)  // final block
    bits(1, 2)  // fixed Huffman
    huffman(0x30, 8)  // literal 0
    for _ in 0..<((zeros - 1) / 258) {
        huffman(0xC5, 8)  // length 258 (symbol 285)
        huffman(0, 5)  // distance 1
    }
    huffman(0, 7)  // end of block
    if count > 0 { out.append(UInt8(buffer & 0xFF)) }
    return out
}
