// safetensors (https://github.com/huggingface/safetensors, format as of safetensors 0.6.2):
// an 8-byte little-endian header length N, N bytes of JSON, then a data section that the header tiles exactly.
// Everything in the header is validated before a byte of data is trusted; the data is memory-mapped, not copied.

import AmusedCore

/// A validated safetensors file: its header parsed and checked, its data memory-mapped on demand.
public struct SafetensorsFile: TensorSource {
    /// Largest header accepted, as in the reference implementation (100 MB).
    public static let maxHeaderBytes = 100_000_000
    /// Longest tensor name accepted, in bytes.
    public static let maxNameBytes = 1024
    /// Most dimensions a tensor may have.
    public static let maxRank = 32

    /// The file.
    public let path: String
    /// Always `.safetensors`.
    public var format: WeightFormat { .safetensors }
    /// The file's size when opened.
    public let fileSize: Int
    /// N, the header's length in bytes (including padding).
    public let headerByteCount: Int
    /// Absolute offset of the data section (8 + N).
    public var dataStart: Int { 8 + headerByteCount }
    /// `__metadata__` string pairs, in header order (empty when absent).
    public let metadata: [(key: String, value: String)]
    /// Tensors in header order.
    public let infos: [TensorInfo]
    private let byName: [String: Int]
    private let mapping: MappedFile?

    /// Opens and validates `path`. With `mapData` false only the header is read (for listing), and
    /// `tensor(named:)` is unavailable.
    public init(path: String, mapData: Bool = true) throws(ReadError) {
        let file: ReadOnlyFile
        do { file = try ReadOnlyFile(path: path) } catch { throw ReadError.from(error, path: path) }
        let size = file.byteCount
        guard size >= 8 else {
            throw ReadError(
                .truncated, path: path, offset: 0,
                "file is \(size) bytes, shorter than the 8-byte header length")
        }
        let lengthBytes = try Self.read(file, at: 0, count: 8)
        let n = lengthBytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(Self.maxHeaderBytes) else {
            throw ReadError(
                .limitExceeded, path: path, offset: 0, field: "header length",
                "header length \(n) exceeds the \(Self.maxHeaderBytes)-byte limit")
        }
        guard Int(n) <= size - 8 else {
            throw ReadError(
                .truncated, path: path, offset: 0, field: "header length",
                "header length \(n) is more than the \(size - 8) bytes after it")
        }
        let headerBytes = try Self.read(file, at: 8, count: Int(n))
        let header = try StrictJSONParser(path: path, baseOffset: 8).parse(headerBytes)
        guard let object = header.objectValue else {
            throw ReadError(.malformed, path: path, offset: 8, "header is not a JSON object")
        }
        let dataSize = size - 8 - Int(n)
        var metadata: [(String, String)] = []
        var infos: [TensorInfo] = []
        var spans: [(begin: Int, end: Int, name: String)] = []
        for (key, value) in object.entries {
            if key == "__metadata__" {
                guard let m = value.objectValue else {
                    throw ReadError(.malformed, path: path, offset: 8, field: key, "__metadata__ is not an object")
                }
                for (mk, mv) in m.entries {
                    guard let s = mv.stringValue else {
                        throw ReadError(
                            .malformed, path: path, offset: 8, field: "__metadata__.\(mk)",
                            "metadata values must be strings")
                    }
                    metadata.append((mk, s))
                }
                continue
            }
            let (info, begin, end) = try Self.tensorInfo(key, value, path: path, dataStart: 8 + Int(n))
            infos.append(info)
            spans.append((begin, end, key))
        }
        // Exact tiling: sorted by offsets, the tensors cover [0, dataSize) with no hole, overlap or trailing byte.
        spans.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var expected = 0
        for span in spans {
            if span.begin != expected {
                let what =
                    span.begin > expected
                    ? "leaves a hole of \(span.begin - expected) bytes before it"
                    : "overlaps the previous tensor"
                throw ReadError(
                    .inconsistent, path: path, offset: 8 + Int(n) + span.begin, field: span.name,
                    "data_offsets begin at \(span.begin), which \(what) (expected \(expected))")
            }
            expected = span.end
        }
        if expected > dataSize {
            let last = spans.last!
            throw ReadError(
                .truncated, path: path, offset: size, field: last.name,
                "data ends at \(expected) but the data section holds only \(dataSize) bytes")
        }
        if expected < dataSize {
            throw ReadError(
                .inconsistent, path: path, offset: 8 + Int(n) + expected,
                "\(dataSize - expected) bytes after the last tensor are not described by the header")
        }
        self.path = path
        self.fileSize = size
        self.headerByteCount = Int(n)
        self.metadata = metadata
        self.infos = infos
        self.byName = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
        if mapData {
            do { mapping = try MappedFile(path: path) } catch { throw ReadError.from(error, path: path) }
            guard mapping!.byteCount == size else {
                throw ReadError(.io, path: path, "the file changed size while it was being opened")
            }
        } else {
            mapping = nil
        }
    }

    /// The tensor called `name`: a zero-copy view of the mapped file.
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let i = byName[name] else {
            throw ReadError(.inconsistent, path: path, field: name, "no tensor of this name in the file")
        }
        guard let mapping else {
            throw ReadError(.io, path: path, field: name, "opened without mapping data (header only)")
        }
        let info = infos[i]
        do {
            try mapping.checkIntact()
            let storage = try Storage(file: mapping, offset: info.fileOffset, byteCount: info.byteCount)
            return try Tensor(dtype: info.dtype, shape: info.shape, storage: storage)
        } catch {
            throw ReadError.from(error, path: path, field: name)
        }
    }

    /// The metadata value for `key`.
    public func metadataValue(_ key: String) -> String? { metadata.first { $0.key == key }?.value }

    private static func read(_ file: ReadOnlyFile, at offset: Int, count: Int) throws(ReadError) -> [UInt8] {
        do { return try file.read(at: offset, count: count) } catch {
            throw ReadError(.io, path: file.path, offset: offset, error.description)
        }
    }

    private static func tensorInfo(_ name: String, _ value: JSONValue, path: String, dataStart: Int)
        throws(ReadError) -> (TensorInfo, Int, Int)
    {
        func fail(_ family: ReadError.Family, _ message: String) -> ReadError {
            ReadError(family, path: path, offset: 8, field: name, message)
        }
        // Names are never used as paths, so '/', '..' and the like are accepted; empty names, control characters
        // and names over 1 KiB are refused.
        guard !name.isEmpty else { throw fail(.malformed, "empty tensor name") }
        guard name.utf8.count <= maxNameBytes else {
            throw fail(.limitExceeded, "tensor name is \(name.utf8.count) bytes (limit \(maxNameBytes))")
        }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw fail(.malformed, "tensor name contains a control character")
        }
        guard let fields = value.objectValue else { throw fail(.malformed, "tensor entry is not an object") }
        for key in fields.keys where !["dtype", "shape", "data_offsets"].contains(key) {
            throw fail(.malformed, "unknown field \"\(key)\" in tensor entry")
        }
        guard let dtypeName = fields["dtype"]?.stringValue else {
            throw fail(.malformed, "missing or non-string dtype")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw fail(.unsupported, "unsupported dtype \"\(dtypeName)\"")
        }
        guard let shapeValues = fields["shape"]?.arrayValue else {
            throw fail(.malformed, "missing or non-array shape")
        }
        guard shapeValues.count <= maxRank else {
            throw fail(.limitExceeded, "rank \(shapeValues.count) exceeds \(maxRank)")
        }
        var shape: [Int] = []
        for v in shapeValues {
            guard let u = v.uint64Value else {
                throw fail(.malformed, "shape element \(v.serialized) is not a non-negative integer")
            }
            guard u <= UInt64(Int.max) else { throw fail(.arithmeticOverflow, "shape element \(u) overflows 63 bits") }
            shape.append(Int(u))
        }
        guard let offsets = fields["data_offsets"]?.arrayValue, offsets.count == 2,
            let b = offsets[0].uint64Value, let e = offsets[1].uint64Value
        else { throw fail(.malformed, "data_offsets must be two non-negative integers") }
        guard b <= UInt64(Int.max), e <= UInt64(Int.max) else {
            throw fail(.arithmeticOverflow, "data_offsets [\(b), \(e)] overflow 63 bits")
        }
        let begin = Int(b), end = Int(e)
        guard let count = SizeMath.product(shape) else {
            throw fail(.arithmeticOverflow, "shape \(describeShape(shape)) has more elements than 64 bits count")
        }
        let (bits, bitsOverflow) = count.multipliedReportingOverflow(by: dtype.bitWidth)
        guard !bitsOverflow else {
            throw fail(.arithmeticOverflow, "\(count) elements of \(dtype.rawValue) overflow 64 bits of size")
        }
        guard bits % 8 == 0 else {
            throw fail(.inconsistent, "\(count) elements of \(dtype.rawValue) do not fill whole bytes")
        }
        guard end >= begin else { throw fail(.inconsistent, "data_offsets end \(end) is before begin \(begin)") }
        guard end - begin == bits / 8 else {
            throw fail(
                .inconsistent,
                "data_offsets span \(end - begin) bytes but shape \(describeShape(shape)) "
                    + "of \(dtype.rawValue) needs \(bits / 8)")
        }
        guard let fileOffset = SizeMath.add(dataStart, begin) else {
            throw fail(.arithmeticOverflow, "data offset \(begin) overflows")
        }
        let info = try TensorInfo(
            name: name, dtype: dtype, shape: shape, fileOffset: fileOffset,
            byteCount: bits / 8, path: path)
        return (info, begin, end)
    }
}

/// Writes safetensors files the way the reference writer (safetensors 0.6.2) does, byte for byte: tensors sorted
/// by dtype (widest first, in the reference's dtype order) then name, compact JSON with `__metadata__` first,
/// the header padded with spaces to a multiple of 8.
public enum SafetensorsWriter {
    /// The header and data layout for `tensors`, validated, without writing anything.
    public static func plan(_ tensors: [(name: String, tensor: Tensor)], metadata: [(String, String)] = [])
        throws(ReadError) -> (header: [UInt8], order: [(name: String, tensor: Tensor)])
    {
        let layout = try plan(entries: tensors.map { ($0.name, $0.tensor.dtype, $0.tensor.shape) }, metadata: metadata)
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.tensor) })
        return (layout.header, layout.order.map { ($0, byName[$0]!) })
    }

    /// The header and the order of tensors described by (name, dtype, shape), validated.
    public static func plan(entries: [(name: String, dtype: DType, shape: [Int])], metadata: [(String, String)] = [])
        throws(ReadError) -> (header: [UInt8], order: [String])
    {
        var seen = Set<String>()
        for (name, _, _) in entries {
            guard !name.isEmpty, name != "__metadata__", seen.insert(name).inserted else {
                throw ReadError(.malformed, path: "<output>", field: name, "tensor names must be unique and non-empty")
            }
        }
        let rank = Dictionary(uniqueKeysWithValues: DType.allCases.enumerated().map { ($1, $0) })
        let order = entries.sorted {
            rank[$0.dtype]! != rank[$1.dtype]!
                ? rank[$0.dtype]! > rank[$1.dtype]!
                : $0.name.utf8.lexicographicallyPrecedes($1.name.utf8)
        }
        var parts: [String] = []
        if !metadata.isEmpty {
            parts.append(
                "\"__metadata__\":{"
                    + metadata.map { JSONValue.quote($0.0) + ":" + JSONValue.quote($0.1) }
                    .joined(separator: ",") + "}")
        }
        var offset = 0
        for (name, dtype, shape) in order {
            guard let count = SizeMath.product(shape), let bytes = SizeMath.byteCount(elements: count, dtype: dtype),
                let end = SizeMath.add(offset, bytes)
            else {
                throw ReadError(.arithmeticOverflow, path: "<output>", field: name, "tensor size overflows")
            }
            parts.append(
                JSONValue.quote(name) + ":{\"dtype\":\"\(dtype.rawValue)\",\"shape\":["
                    + shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        return (header, order.map(\.name))
    }

    /// Writes every tensor of `source` to `path`, loading one tensor at a time (memory stays near the largest tensor
    /// even when the source decodes into memory), atomically.
    public static func write(
        source: any TensorSource, metadata: [(String, String)] = [], to path: String, durable: Bool = true
    ) throws {
        let (header, order) = try plan(entries: source.infos.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
        let infos = Dictionary(uniqueKeysWithValues: source.infos.map { ($0.name, $0) })
        try write(header: header, order: order, to: path, durable: durable) { name in
            let t = try source.tensor(named: name)
            guard t.dtype == infos[name]!.dtype, t.shape == infos[name]!.shape else {
                throw ReadError(.inconsistent, path: source.path, field: name, "tensor differs from its description")
            }
            return t
        }
    }

    /// Writes `tensors` to `path` atomically (a temporary file renamed into place once complete and synced).
    public static func write(
        _ tensors: [(name: String, tensor: Tensor)], metadata: [(String, String)] = [],
        to path: String
    ) throws(ReadError) {
        let (header, order) = try plan(tensors, metadata: metadata)
        let byName = Dictionary(uniqueKeysWithValues: order.map { ($0.name, $0.tensor) })
        do {
            try write(header: header, order: order.map(\.name), to: path) { byName[$0]! }
        } catch let error as ReadError {
            throw error
        } catch {
            throw ReadError(.io, path: path, "\(error)")
        }
    }

    static func write(
        header: [UInt8], order: [String], to path: String, durable: Bool = true, tensor: (String) throws -> Tensor
    ) throws {
        do {
            let out = try AtomicFileWriter(destination: path)
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { (raw) throws(TensorError) in try out.write(raw) }
            try out.write(header)
            for name in order {
                let t = try tensor(name)
                do {
                    try t.withUnsafeBytes { raw in try out.write(raw) }
                    t.storage.releasePages()  // streaming: keep the resident set near one tensor
                } catch let e as TensorError {
                    throw ReadError.from(e, path: path, field: name)
                } catch {
                    throw ReadError(.io, path: path, field: name, "\(error)")
                }
            }
            try out.commit(durable: durable)
        } catch let error as ReadError {
            throw error
        } catch let error as TensorError {
            throw ReadError.from(error, path: path)
        } catch {
            throw ReadError(.io, path: path, "\(error)")
        }
    }
}
