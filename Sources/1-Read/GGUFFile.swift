// GGUF (versions 2 and 3, little-endian), as llama.cpp's gguf-py writes it: header, metadata key/values, tensor
// infos, aligned data. Every count and length is checked against the bytes that remain before it is used (the
// published GGUF heap overflows were all "a size drove an allocation first"). F32, F16, BF16, F64 and the integer
// types I8, I16, I32, I64 are zero-copy; Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 are dequantized to float32 on read.

import AmusedCore

/// A GGUF metadata value.
public enum GGUFValue: Sendable, Equatable {
    /// Unsigned integers (u8 … u64).
    case uint(UInt64)
    /// Signed integers (i8 … i64).
    case int(Int64)
    /// f32 or f64.
    case float(Double)
    /// bool.
    case bool(Bool)
    /// UTF-8 string (kept as opaque text: templates are never rendered).
    case string(String)
    /// Array of values of one type.
    case array([GGUFValue])
}

/// A validated GGUF file.
public struct GGUFFile: TensorSource {
    /// The file.
    public let path: String
    /// Always `.gguf`.
    public var format: WeightFormat { .gguf }
    /// Format version (2 or 3).
    public let version: Int
    /// Metadata, in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    /// Tensors in file order (shape row-major, outermost first; the stored dtype, or F32 for quantized ones).
    public let infos: [TensorInfo]
    /// The stored ggml type of each tensor.
    public let ggmlTypes: [String: Int]
    private let file: MappedFile
    private let dataOffsets: [String: (offset: Int, bytes: Int, dims: [Int])]

    /// ggml types read: id → (name, block size in elements, bytes per block).
    static let types: [Int: (name: String, block: Int, bytes: Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 8: ("Q8_0", 32, 34), 2: ("Q4_0", 32, 18),
        3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24),
        24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    ]
    /// The types read as views of the file, with their dtypes; the others are block quantizations, dequantized.
    static let plainTypes: [Int: DType] = [
        0: .f32, 1: .f16, 30: .bf16, 24: .i8, 25: .i16, 26: .i32, 27: .i64, 28: .f64,
    ]
    /// Longest tensor name (GGML_MAX_NAME).
    public static let maxNameBytes = 64
    /// Memory the parsed metadata may take (a `GGUFValue` per array element plus string bytes). A 128k-token
    /// vocabulary with its merges takes about 15 MB; a u8 array of 10^8 elements in a 100 MB file would take 2.4 GB.
    public static let maxMetadataBytes = 256 << 20

    /// Opens and validates `path`.
    public init(path: String) throws(ReadError) {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw ReadError.from(error, path: path) }
        var cursor = Cursor(base: file.pointer(at: 0), count: file.byteCount, path: path, budget: Self.maxMetadataBytes)
        guard file.byteCount >= 24 else {
            throw ReadError(.truncated, path: path, offset: 0, "file shorter than a GGUF header")
        }
        guard try cursor.u32() == 0x4655_4747 else {
            throw ReadError(.malformed, path: path, offset: 0, "not a GGUF file")
        }
        let version = try cursor.u32()
        guard version == 2 || version == 3 else {
            throw ReadError(
                .unsupported, path: path, offset: 4,
                version == 0x0300_0000 || version == 0x0200_0000 ? "big-endian GGUF" : "GGUF version \(version)")
        }
        self.version = Int(version)
        let tensorCount = try cursor.count(minimumRecord: 8 + 4 + 4 + 8, what: "tensor count")
        let kvCount = try cursor.count(minimumRecord: 8 + 1 + 4, what: "metadata count")
        var metadata: [(String, GGUFValue)] = []
        var keys = Set<String>()
        for _ in 0..<kvCount {
            let at = cursor.pos
            let key = try cursor.string(limit: 65535)
            guard !key.isEmpty, key.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }), keys.insert(key).inserted else {
                throw ReadError(
                    .malformed, path: path, offset: at, field: key, "metadata keys must be unique, non-empty ASCII")
            }
            metadata.append((key, try cursor.value(type: try cursor.u32(), depth: 0)))
        }
        var alignment = 32
        if let a = metadata.first(where: { $0.0 == "general.alignment" })?.1 {
            guard case .uint(let v) = a, v > 0, v <= 1 << 16, v & (v - 1) == 0 else {
                throw ReadError(
                    .malformed, path: path, field: "general.alignment", "alignment must be a power of two up to 65536")
            }
            alignment = Int(v)
        }
        var raw: [(name: String, dims: [Int], type: Int, offset: Int, at: Int)] = []
        var names = Set<String>()
        for _ in 0..<tensorCount {
            let at = cursor.pos
            let name = try cursor.string(limit: 1 << 16)
            guard !name.isEmpty, name.utf8.count <= Self.maxNameBytes, names.insert(name).inserted else {
                throw ReadError(
                    .malformed, path: path, offset: at, field: name, "tensor names must be unique, 1–64 bytes")
            }
            let rank = try cursor.u32()
            guard rank >= 1 && rank <= 4 else {
                throw ReadError(.malformed, path: path, offset: at, field: name, "rank \(rank)")
            }
            var dims: [Int] = []
            for _ in 0..<rank {
                let d = try cursor.u64()
                guard d < 1 << 62 else {
                    throw ReadError(.malformed, path: path, offset: at, field: name, "dimension \(d)")
                }
                dims.append(Int(d))
            }
            let type = Int(try cursor.u32())
            guard Self.types[type] != nil else {
                throw ReadError(.unsupported, path: path, offset: at, field: name, "ggml tensor type \(type)")
            }
            let offset = try cursor.u64()
            guard offset < 1 << 62 else {
                throw ReadError(.arithmeticOverflow, path: path, offset: at, field: name, "offset")
            }
            raw.append((name, dims, type, Int(offset), at))
        }
        let dataStart = (cursor.pos + alignment - 1) / alignment * alignment
        var infos: [TensorInfo] = []
        var offsets: [String: (Int, Int, [Int])] = [:]
        var types: [String: Int] = [:]
        var spans: [(Int, Int, String)] = []
        for t in raw {
            let type = Self.types[t.type]!
            guard t.dims[0] % type.block == 0 else {
                throw ReadError(
                    .inconsistent, path: path, offset: t.at, field: t.name,
                    "row of \(t.dims[0]) elements is not a multiple of the \(type.name) block (\(type.block))")
            }
            guard let count = SizeMath.product(t.dims), let blocks = Optional(count / type.block),
                let bytes = SizeMath.product([blocks, type.bytes])
            else {
                throw ReadError(.arithmeticOverflow, path: path, offset: t.at, field: t.name, "tensor size overflows")
            }
            guard t.offset % alignment == 0 else {
                throw ReadError(
                    .inconsistent, path: path, offset: t.at, field: t.name,
                    "offset \(t.offset) not aligned to \(alignment)")
            }
            guard let start = SizeMath.add(dataStart, t.offset), let end = SizeMath.add(start, bytes) else {
                throw ReadError(.arithmeticOverflow, path: path, offset: t.at, field: t.name, "tensor end overflows")
            }
            guard end <= file.byteCount else {
                throw ReadError(
                    .truncated, path: path, offset: start, field: t.name, "data runs past the end of the file")
            }
            spans.append((start, end, t.name))
            offsets[t.name] = (start, bytes, t.dims)
            types[t.name] = t.type
            let dtype = Self.plainTypes[t.type] ?? .f32
            let shape = Array(t.dims.reversed())
            guard let readBytes = SizeMath.byteCount(shape: shape, dtype: dtype) else {
                throw ReadError(.arithmeticOverflow, path: path, offset: t.at, field: t.name, "tensor size overflows")
            }
            infos.append(
                try TensorInfo(
                    name: t.name, dtype: dtype, shape: shape, fileOffset: start,
                    byteCount: readBytes, path: path))
        }
        spans.sort { $0.0 < $1.0 }
        for (a, b) in zip(spans, spans.dropFirst()) where a.1 > b.0 {
            throw ReadError(.inconsistent, path: path, offset: b.0, field: b.2, "tensor data overlaps \(a.2)")
        }
        self.metadata = metadata
        self.infos = infos
        self.ggmlTypes = types
        self.dataOffsets = offsets
    }

    /// The tensor called `name`: a view for F32/F16/BF16, dequantized float32 for block types.
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let (offset, bytes, dims) = dataOffsets[name], let typeID = ggmlTypes[name] else {
            throw ReadError(.inconsistent, path: path, field: name, "no tensor of this name in the file")
        }
        let shape = Array(dims.reversed())
        do throws(TensorError) {
            try file.checkIntact()
            let storage = try Storage(file: file, offset: offset, byteCount: bytes)
            switch Self.plainTypes[typeID] {
            case let dtype?: return try Tensor(dtype: dtype, shape: shape, storage: storage)
            case nil:
                let values = GGMLQuant.dequantize(
                    type: typeID, UnsafeRawBufferPointer(start: storage.baseAddress, count: bytes),
                    count: shape.reduce(1, *))  // checked at open
                return try Tensor(floats: values, shape: shape)
            }
        } catch {
            throw ReadError.from(error, path: path, field: name)
        }
    }

    /// The metadata value for `key`.
    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }

    struct Cursor {
        let base: UnsafeRawPointer
        let count: Int
        let path: String
        var pos = 0
        /// Bytes of parsed values still allowed.
        var budget: Int

        init(base: UnsafeRawPointer, count: Int, path: String, budget: Int) {
            self.base = base
            self.count = count
            self.path = path
            self.budget = budget
        }

        /// Charges `bytes` of parsed values against the budget before they are allocated.
        mutating func spend(_ bytes: Int, at: Int) throws(ReadError) {
            guard bytes <= budget else {
                throw ReadError(
                    .limitExceeded, path: path, offset: at,
                    "metadata would take more than \(GGUFFile.maxMetadataBytes >> 20) MiB in memory")
            }
            budget -= bytes
        }

        mutating func need(_ n: Int) throws(ReadError) {
            guard n >= 0, n <= count - pos else {
                throw ReadError(.truncated, path: path, offset: pos, "needs \(n) bytes, \(count - pos) remain")
            }
        }

        mutating func load<T: FixedWidthInteger>(_: T.Type) throws(ReadError) -> T {
            try need(MemoryLayout<T>.size)
            defer { pos += MemoryLayout<T>.size }
            return T(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: T.self))
        }

        mutating func u32() throws(ReadError) -> UInt32 { try load(UInt32.self) }
        mutating func u64() throws(ReadError) -> UInt64 { try load(UInt64.self) }

        /// A count of records of at least `minimumRecord` bytes each, checked against the bytes that remain.
        mutating func count(minimumRecord: Int, what: String) throws(ReadError) -> Int {
            let at = pos
            let n = try u64()
            guard n <= UInt64(count - pos) / UInt64(minimumRecord) else {
                throw ReadError(
                    .truncated, path: path, offset: at, field: what, "\(n) records cannot fit in \(count - pos) bytes")
            }
            return Int(n)
        }

        mutating func string(limit: Int) throws(ReadError) -> String {
            let at = pos
            let n = try u64()
            guard n <= UInt64(count - pos) else {
                throw ReadError(.truncated, path: path, offset: at, "string of \(n) bytes, \(count - pos) remain")
            }
            guard n <= UInt64(limit) else {
                throw ReadError(.malformed, path: path, offset: at, "string of \(n) bytes")
            }
            try spend(Int(n), at: at)
            defer { pos += Int(n) }
            guard let s = String(validating: UnsafeRawBufferPointer(start: base + pos, count: Int(n)), as: UTF8.self)
            else {
                throw ReadError(.malformed, path: path, offset: at, "string is not UTF-8")
            }
            return s
        }

        static let minimumSize: [UInt32: Int] = [
            0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8,
            11: 8, 12: 8,
        ]

        mutating func value(type: UInt32, depth: Int) throws(ReadError) -> GGUFValue {
            let at = pos
            switch type {
            case 0: return .uint(UInt64(try load(UInt8.self)))
            case 1: return .int(Int64(try load(Int8.self)))
            case 2: return .uint(UInt64(try load(UInt16.self)))
            case 3: return .int(Int64(try load(Int16.self)))
            case 4: return .uint(UInt64(try load(UInt32.self)))
            case 5: return .int(Int64(try load(Int32.self)))
            case 6: return .float(Double(Float(bitPattern: try load(UInt32.self))))
            case 7:
                let b = try load(UInt8.self)
                guard b <= 1 else { throw ReadError(.malformed, path: path, offset: at, "bool value \(b)") }
                return .bool(b == 1)
            case 8: return .string(try string(limit: 1 << 30))
            case 9:
                guard depth == 0 else { throw ReadError(.unsupported, path: path, offset: at, "nested arrays") }
                let elementType = try u32()
                guard let size = Self.minimumSize[elementType] else {
                    throw ReadError(.malformed, path: path, offset: at, "array element type \(elementType)")
                }
                let n = try count(minimumRecord: size, what: "array")
                let (bytes, overflow) = n.multipliedReportingOverflow(by: MemoryLayout<GGUFValue>.stride)
                try spend(overflow ? Int.max : bytes, at: at)
                var items: [GGUFValue] = []
                items.reserveCapacity(n)
                for _ in 0..<n { items.append(try value(type: elementType, depth: depth + 1)) }
                return .array(items)
            case 10: return .uint(try load(UInt64.self))
            case 11: return .int(try load(Int64.self))
            case 12: return .float(Double(bitPattern: try load(UInt64.self)))
            default: throw ReadError(.malformed, path: path, offset: at, "value type \(type)")
            }
        }
    }
}

/// ggml's block quantizations, dequantized as ggml does (scale · (q − zero) or scale · q + min).
enum GGMLQuant {
    static func dequantize(type: Int, _ raw: UnsafeRawBufferPointer, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        let blocks = count / 32
        func half(_ o: Int) -> Float {
            FloatBits.halfToFloat(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian)
        }
        for b in 0..<blocks {
            let o = b * 32
            switch type {
            case 8:  // Q8_0: f16 d, 32 × i8
                let base = b * 34, d = half(base)
                for i in 0..<32 { out[o + i] = d * Float(Int8(bitPattern: raw[base + 2 + i])) }
            case 2:  // Q4_0: f16 d, 16 bytes of nibbles; low nibbles are elements 0–15, high 16–31; q − 8
                let base = b * 18, d = half(base)
                for i in 0..<16 {
                    let q = raw[base + 2 + i]
                    out[o + i] = d * Float(Int(q & 0x0F) - 8)
                    out[o + i + 16] = d * Float(Int(q >> 4) - 8)
                }
            case 3:  // Q4_1: f16 d, f16 m, nibbles; d · q + m
                let base = b * 20, d = half(base), m = half(base + 2)
                for i in 0..<16 {
                    let q = raw[base + 4 + i]
                    out[o + i] = d * Float(q & 0x0F) + m
                    out[o + i + 16] = d * Float(q >> 4) + m
                }
            case 6:  // Q5_0: f16 d, u32 high bits, nibbles; q − 16
                let base = b * 22, d = half(base)
                let qh = raw.loadUnaligned(fromByteOffset: base + 2, as: UInt32.self).littleEndian
                for i in 0..<16 {
                    let q = raw[base + 6 + i]
                    let lo = Int(q & 0x0F) | Int((qh >> UInt32(i)) & 1) << 4
                    let hi = Int(q >> 4) | Int((qh >> UInt32(i + 16)) & 1) << 4
                    out[o + i] = d * Float(lo - 16)
                    out[o + i + 16] = d * Float(hi - 16)
                }
            case 7:  // Q5_1: f16 d, f16 m, u32 high bits, nibbles; d · q + m
                let base = b * 24, d = half(base), m = half(base + 2)
                let qh = raw.loadUnaligned(fromByteOffset: base + 4, as: UInt32.self).littleEndian
                for i in 0..<16 {
                    let q = raw[base + 8 + i]
                    let lo = Int(q & 0x0F) | Int((qh >> UInt32(i)) & 1) << 4
                    let hi = Int(q >> 4) | Int((qh >> UInt32(i + 16)) & 1) << 4
                    out[o + i] = d * Float(lo) + m
                    out[o + i + 16] = d * Float(hi) + m
                }
            default: break
            }
        }
        return out
    }
}
