// NumPy `.npz` archives (numpy.savez stores, numpy.savez_compressed deflates) of `.npy` members. The `.npy` header
// is parsed as the strict dict literal NumPy writes — never evaluated — with its length capped before it is read;
// object arrays are refused. Stored little-endian members are zero-copy views; deflated or big-endian members are
// decoded (the format forces that copy).

import AmusedCore
import Foundation

/// The arrays of an `.npz` file, by member name without `.npy`.
public struct NumpyArchive: TensorSource {
    /// Longest `.npy` header accepted (NumPy itself warns past 10,000 bytes).
    public static let maxHeaderBytes = 10_000
    /// The file.
    public let path: String
    /// Always `.zip` (NumPy flavour).
    public var format: WeightFormat { .zip }
    /// Arrays in archive order.
    public let infos: [TensorInfo]
    private let zip: ZipArchive
    private let members: [String: ZipEntry]

    /// Opens `path` and validates every member's header. Data is decoded only when a tensor is asked for, so
    /// reading a compressed archive takes memory on the order of one array, not the file.
    public init(path: String) throws(ReadError) {
        let zip = try ZipArchive(path: path)
        var infos: [TensorInfo] = []
        var members: [String: ZipEntry] = [:]
        for entry in zip.entries {
            guard entry.name.hasSuffix(".npy") else {
                throw ReadError(.unsupported, path: path, field: entry.name, "member is not a .npy array")
            }
            let name = String(entry.name.dropLast(4))
            // Only the header is read here: a stored member's first bytes, or a deflated one's inflated prefix.
            let head = try zip.prefix(entry, count: Self.maxPrefix)
            let h: Header
            do {
                h = try head.withUnsafeBytes { raw in
                    try Self.header(
                        raw, memberSize: entry.size, path: path, member: entry.name, fileOffset: entry.dataOffset)
                }
            } catch let error as ReadError {
                throw error
            } catch {
                throw ReadError(.malformed, path: path, field: entry.name, "\(error)")
            }
            members[name] = entry
            infos.append(
                try TensorInfo(
                    name: name, dtype: h.dtype, shape: h.shape, fileOffset: entry.dataOffset,
                    byteCount: h.bytes, path: path))
        }
        self.path = path
        self.infos = infos
        self.zip = zip
        self.members = members
    }

    /// The array called `name` (a view of the file for stored little-endian C-order members; decoded otherwise).
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let entry = members[name] else {
            throw ReadError(.inconsistent, path: path, field: name, "no array of this name in the archive")
        }
        return try Self.load(entry, from: zip, path: path, verify: true)
    }

    static func load(_ entry: ZipEntry, from zip: ZipArchive, path: String, verify: Bool) throws(ReadError) -> Tensor {
        let storage: Storage
        if entry.method == 0 {
            storage = try zip.storedData(entry, verify: verify)
        } else {
            storage = try zip.data(entry).withUnsafeBytes { Storage(copying: $0) }
        }
        return try array(
            UnsafeRawBufferPointer(start: storage.baseAddress, count: storage.byteCount),
            storage: storage, path: path, member: entry.name, fileOffset: entry.dataOffset)
    }

    static let dtypes: [String: DType] = [
        "f2": .f16, "f4": .f32, "f8": .f64, "i1": .i8, "i2": .i16, "i4": .i32, "i8": .i64, "u1": .u8, "u2": .u16,
        "u4": .u32, "u8": .u64, "b1": .bool,
    ]

    /// The most of a member read to find its header: magic, version, length field and the longest header.
    static let maxPrefix = 12 + maxHeaderBytes

    /// A `.npy` header: what the data is and where it starts.
    struct Header {
        let descr: String
        let order: Character
        let dtype: DType
        let fortran: Bool
        let shape: [Int]
        let count: Int
        let bytes: Int
        let dataStart: Int
    }

    /// Parses the header at the start of `raw` (the member's first bytes) and checks that the member's
    /// `memberSize` bytes hold exactly the data it declares.
    static func header(_ raw: UnsafeRawBufferPointer, memberSize: Int, path: String, member: String, fileOffset: Int)
        throws(ReadError) -> Header
    {
        func fail(_ family: ReadError.Family, _ at: Int, _ message: String) -> ReadError {
            ReadError(family, path: path, offset: fileOffset + at, field: member, message)
        }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard raw.count >= 10, Array(raw[0..<6]) == magic else { throw fail(.unsupported, 0, "not a .npy array") }
        let major = raw[6]
        guard raw[7] == 0, [1, 2, 3].contains(major) else {
            throw fail(.unsupported, 6, "npy format version \(major).\(raw[7])")
        }
        let lengthBytes = major == 1 ? 2 : 4
        guard raw.count >= 8 + lengthBytes else { throw fail(.truncated, 8, "header length missing") }
        var headerLength = 0
        for i in 0..<lengthBytes { headerLength |= Int(raw[8 + i]) << (8 * i) }
        guard headerLength <= maxHeaderBytes else {
            throw fail(.limitExceeded, 8, "header of \(headerLength) bytes (limit \(maxHeaderBytes))")
        }
        let headerStart = 8 + lengthBytes
        guard headerStart + headerLength <= raw.count else {
            throw fail(.truncated, headerStart, "header runs past the member")
        }
        let header = String(decoding: raw[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        let (descr, fortran, shape) = try parseHeader(header) { message in fail(.malformed, headerStart, message) }
        if descr == "|O" || descr.hasSuffix("O") {
            throw fail(.forbidden, headerStart, "object array (would need pickle)")
        }
        guard descr.count == 3, let order = descr.first, "<>|=".contains(order),
            let dtype = dtypes[String(descr.dropFirst())]
        else {
            throw fail(.unsupported, headerStart, "dtype \(descr)")
        }
        guard let count = SizeMath.product(shape), let bytes = SizeMath.byteCount(shape: shape, dtype: dtype) else {
            throw fail(.arithmeticOverflow, headerStart, "shape \(describeShape(shape)) overflows")
        }
        let dataStart = headerStart + headerLength
        guard memberSize - dataStart == bytes else {
            throw fail(
                memberSize - dataStart < bytes ? .truncated : .inconsistent, dataStart,
                "\(memberSize - dataStart) data bytes for shape \(describeShape(shape)) of \(descr) (\(bytes) needed)")
        }
        return Header(
            descr: descr, order: order, dtype: dtype, fortran: fortran, shape: shape, count: count,
            bytes: bytes, dataStart: dataStart)
    }

    /// Parses one `.npy` member held in `storage` (whose bytes `raw` are) into a contiguous tensor.
    static func array(_ raw: UnsafeRawBufferPointer, storage: Storage, path: String, member: String, fileOffset: Int)
        throws(ReadError) -> Tensor
    {
        let h = try header(raw, memberSize: raw.count, path: path, member: member, fileOffset: fileOffset)
        let (order, dtype, fortran, shape, count, bytes, dataStart) = (
            h.order, h.dtype, h.fortran, h.shape, h.count,
            h.bytes, h.dataStart
        )
        func fail(_ family: ReadError.Family, _ at: Int, _ message: String) -> ReadError {
            ReadError(family, path: path, offset: fileOffset + at, field: member, message)
        }
        // Fortran order is the transposed layout: strides run fastest over the first dimension. (The products cannot
        // overflow: `byteCount(shape:)` checked every dimension's product, zeros aside.)
        var strides = [Int](repeating: 1, count: shape.count)
        if fortran {
            var acc = 1
            for i in 0..<shape.count {
                strides[i] = acc
                acc *= max(shape[i], 1)
            }
        } else {
            strides = contiguousStrides(shape)
        }
        do {
            var t = try Tensor(dtype: dtype, shape: shape, storage: storage, byteOffset: dataStart, strides: strides)
            if order == ">" && dtype.bitWidth > 8 {
                // Big-endian: swap every element into a new (little-endian) buffer.
                let width = dtype.byteWidth!
                let swapped = Storage(zeroedByteCount: bytes)
                let src = storage.baseAddress + dataStart, dst = swapped.mutableBaseAddress!
                for i in 0..<count {
                    for b in 0..<width {
                        dst.storeBytes(
                            of: src.load(fromByteOffset: i * width + width - 1 - b, as: UInt8.self),
                            toByteOffset: i * width + b, as: UInt8.self)
                    }
                }
                t = try Tensor(dtype: dtype, shape: shape, storage: swapped, byteOffset: 0, strides: strides)
            }
            return try t.contiguous()
        } catch {
            throw fail(.inconsistent, dataStart, "\(error)")
        }
    }

    /// The header NumPy writes: `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` (padded with spaces
    /// and a newline). Exactly these three keys, literals only.
    static func parseHeader(_ text: String, fail: (String) -> ReadError) throws(ReadError)
        -> (descr: String, fortran: Bool, shape: [Int])
    {
        var s = Substring(text.trimmingCharacters(in: [" ", "\n"]))
        func skip() { while s.first == " " { s.removeFirst() } }
        func expect(_ c: Character) throws(ReadError) {
            skip()
            guard s.first == c else { throw fail("expected '\(c)' in the header") }
            s.removeFirst()
        }
        func quoted() throws(ReadError) -> String {
            skip()
            guard s.first == "'" else { throw fail("expected a quoted string in the header") }
            s.removeFirst()
            guard let end = s.firstIndex(of: "'") else { throw fail("unterminated string in the header") }
            let value = String(s[..<end])
            s = s[s.index(after: end)...]
            return value
        }
        try expect("{")
        var descr: String?, fortran: Bool?, shape: [Int]?
        for _ in 0..<3 {
            let key = try quoted()
            try expect(":")
            skip()
            switch key {
            case "descr" where descr == nil: descr = try quoted()
            case "fortran_order" where fortran == nil:
                if s.hasPrefix("True") {
                    fortran = true
                    s.removeFirst(4)
                } else if s.hasPrefix("False") {
                    fortran = false
                    s.removeFirst(5)
                } else {
                    throw fail("fortran_order is not True or False")
                }
            case "shape" where shape == nil:
                try expect("(")
                var dims: [Int] = []
                while true {
                    skip()
                    if s.first == ")" {
                        s.removeFirst()
                        break
                    }
                    let digits = s.prefix { $0.isASCII && $0.isNumber }
                    guard !digits.isEmpty, digits.count <= 18, let d = Int(digits) else {
                        throw fail("shape entries must be non-negative integers")
                    }
                    dims.append(d)
                    s.removeFirst(digits.count)
                    skip()
                    if s.first == "," { s.removeFirst() } else if s.first != ")" { throw fail("bad shape tuple") }
                }
                guard dims.count <= 32 else { throw fail("rank over 32") }
                shape = dims
            default: throw fail("unexpected or repeated key '\(key)' in the header")
            }
            skip()
            if s.first == "," { s.removeFirst() }
        }
        try expect("}")
        skip()
        guard s.isEmpty, let descr, let fortran, let shape else { throw fail("header is not the dict NumPy writes") }
        return (descr, fortran, shape)
    }
}

/// One array saved by `numpy.save`: a bare `.npy` file, its tensor named after the file (`w.npy` → `w`). Little-endian
/// C-order data is a view of the mapped file; Fortran-order or big-endian data is decoded.
public struct NumpyArray: TensorSource {
    /// The file.
    public let path: String
    /// Always `.npy`.
    public var format: WeightFormat { .npy }
    /// The one array.
    public let infos: [TensorInfo]
    private let file: MappedFile

    /// Opens `path` and validates its header (the data is read when the tensor is asked for).
    public init(path: String) throws(ReadError) {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw ReadError.from(error, path: path) }
        let name = String((path.split(separator: "/").last ?? Substring(path)).dropLast(path.hasSuffix(".npy") ? 4 : 0))
        let raw = UnsafeRawBufferPointer(start: file.pointer(at: 0), count: min(file.byteCount, NumpyArchive.maxPrefix))
        let h = try NumpyArchive.header(raw, memberSize: file.byteCount, path: path, member: name, fileOffset: 0)
        infos = [
            try TensorInfo(
                name: name, dtype: h.dtype, shape: h.shape, fileOffset: h.dataStart, byteCount: h.bytes,
                path: path)
        ]
    }

    /// The array (`name` is the file's name without `.npy`).
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard name == infos[0].name else {
            throw ReadError(.inconsistent, path: path, field: name, "the file holds one array, \(infos[0].name)")
        }
        do {
            try file.checkIntact()
            let storage = try Storage(file: file, offset: 0, byteCount: file.byteCount)
            return try NumpyArchive.array(
                UnsafeRawBufferPointer(start: storage.baseAddress, count: storage.byteCount),
                storage: storage, path: path, member: name, fileOffset: 0)
        } catch let error as ReadError {
            throw error
        } catch let error as TensorError {
            throw ReadError.from(error, path: path, field: name)
        } catch {
            throw ReadError(.io, path: path, field: name, "\(error)")
        }
    }
}
