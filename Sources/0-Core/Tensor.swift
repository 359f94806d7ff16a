// A typed, shaped view of storage: what every reader returns and every later stage consumes.

/// A tensor: dtype, shape and element strides over a `Storage` (owned or memory-mapped).
public struct Tensor: Sendable {
    /// Element type.
    public let dtype: DType
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// Element strides per dimension (row-major for contiguous tensors).
    public let strides: [Int]
    /// The bytes.
    public let storage: Storage
    /// Byte offset of element 0 inside `storage`.
    public let byteOffset: Int

    /// A view of `storage`; fails when any element it can reach lies outside the storage.
    public init(dtype: DType, shape: [Int], storage: Storage, byteOffset: Int = 0, strides: [Int]? = nil)
        throws(TensorError)
    {
        let strides = strides ?? contiguousStrides(shape)
        guard strides.count == shape.count else {
            throw .invalidView(
                "shape \(describeShape(shape)) has \(shape.count) dimensions but \(strides.count) strides")
        }
        // Every count and byte size derived from the shape later (`elementCount`, `byteCount`, a copy) fits in an Int.
        guard let count = SizeMath.product(shape), SizeMath.byteCount(shape: shape, dtype: dtype) != nil else {
            throw .invalidView("shape \(describeShape(shape)) of \(dtype.rawValue) overflows 64 bits")
        }
        guard byteOffset >= 0 else { throw .invalidView("negative byte offset \(byteOffset)") }
        if count > 0 {
            if let width = dtype.byteWidth {
                // The largest element index the view can reach, computed with checked arithmetic.
                var maxIndex = 0
                for (d, s) in zip(shape, strides) {
                    guard s >= 0, let step = SizeMath.product([d - 1, s]), let m = SizeMath.add(maxIndex, step) else {
                        throw .invalidView(
                            "strides \(strides) of shape \(describeShape(shape)) are negative or overflow")
                    }
                    maxIndex = m
                }
                guard let end = SizeMath.add(maxIndex, 1),
                    let lastByte = SizeMath.product([end, width]).flatMap({ SizeMath.add($0, byteOffset) }),
                    lastByte <= storage.byteCount
                else {
                    throw .invalidView(
                        "shape \(describeShape(shape)) with strides \(strides) at byte \(byteOffset) "
                            + "reaches past the end of its \(storage.byteCount)-byte storage")
                }
            } else {
                guard strides == contiguousStrides(shape),
                    let bytes = SizeMath.byteCount(elements: count, dtype: dtype),
                    let end = SizeMath.add(byteOffset, bytes), end <= storage.byteCount
                else {
                    throw .invalidView(
                        "packed \(dtype.rawValue) tensor of shape \(describeShape(shape)) must be "
                            + "contiguous, fill whole bytes and fit its storage")
                }
            }
        }
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// An owned float32 tensor holding `values`.
    public init(floats values: [Float], shape: [Int]) throws(TensorError) {
        guard SizeMath.product(shape) == values.count else {
            throw .invalidView("\(values.count) values do not fill shape \(describeShape(shape))")
        }
        let storage = values.withUnsafeBytes { Storage(copying: $0) }
        try self.init(dtype: .f32, shape: shape, storage: storage)
    }

    /// An owned int64 tensor holding `values`.
    public init(int64s values: [Int64], shape: [Int]) throws(TensorError) {
        guard SizeMath.product(shape) == values.count else {
            throw .invalidView("\(values.count) values do not fill shape \(describeShape(shape))")
        }
        let storage = values.withUnsafeBytes { Storage(copying: $0) }
        try self.init(dtype: .i64, shape: shape, storage: storage)
    }

    /// Number of elements (cannot overflow: `init` checked the shape's byte size).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Bytes the elements take when contiguous (cannot overflow: `init` checked it).
    public var byteCount: Int { (elementCount * dtype.bitWidth) / 8 }

    /// True when the elements are laid out row-major without gaps.
    public var isContiguous: Bool { elementCount == 0 || strides == contiguousStrides(shape) }

    /// True when the bytes are a view into a memory-mapped file.
    public var isMapped: Bool { storage.isMapped }

    /// Calls `body` with the contiguous bytes of this tensor (copying first only when it is strided).
    /// Fails when the file behind a mapped tensor changed size since it was opened.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try storage.mappedFile?.checkIntact()
        if isContiguous {
            return try body(UnsafeRawBufferPointer(start: storage.baseAddress + byteOffset, count: byteCount))
        }
        return try contiguous().withUnsafeBytes(body)
    }

    /// A row-major copy when the tensor is strided; `self` when it already is contiguous.
    public func contiguous() throws(TensorError) -> Tensor {
        if isContiguous { return self }
        try storage.mappedFile?.checkIntact()
        let width = dtype.byteWidth!  // packed types are always contiguous (checked in init)
        let out = Storage(zeroedByteCount: elementCount * width)
        let dst = out.mutableBaseAddress!
        var index = [Int](repeating: 0, count: shape.count)
        for n in 0..<elementCount {
            var src = 0
            for d in 0..<shape.count { src += index[d] * strides[d] }
            (dst + n * width).copyMemory(from: storage.baseAddress + byteOffset + src * width, byteCount: width)
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return try Tensor(dtype: dtype, shape: shape, storage: out)
    }

    /// The same elements with a new shape of equal element count (contiguous tensors only; others are copied).
    public func reshaped(_ newShape: [Int]) throws(TensorError) -> Tensor {
        guard SizeMath.product(newShape) == elementCount else {
            throw .invalidView("cannot reshape \(describeShape(shape)) to \(describeShape(newShape))")
        }
        let c = try contiguous()
        return try Tensor(dtype: dtype, shape: newShape, storage: c.storage, byteOffset: c.byteOffset)
    }

    /// Every element as a `Double`, row-major: exact for every type but 64-bit integers beyond 2^53.
    public func doubles() throws -> [Double] {
        guard dtype.isScalarConvertible else { throw TensorError.unsupportedConversion(from: dtype, to: .f64) }
        return try withUnsafeBytes { raw in
            (0..<elementCount).map { ElementCodec.decode(dtype, raw.baseAddress!, index: $0) }
        }
    }

    /// Every element as a `Float`, row-major (float32 rounding of `doubles()`, with fast paths for float types).
    public func floats() throws -> [Float] {
        guard dtype.isScalarConvertible else { throw TensorError.unsupportedConversion(from: dtype, to: .f32) }
        return try withUnsafeBytes { raw in
            let n = elementCount
            switch dtype {
            case .f32:
                return Array(raw.bindMemory(to: Float.self).prefix(n))
            case .f16:
                let src = raw.bindMemory(to: UInt16.self)
                return (0..<n).map { FloatBits.halfToFloat(src[$0]) }
            case .bf16:
                let src = raw.bindMemory(to: UInt16.self)
                return (0..<n).map { Float(bitPattern: UInt32(src[$0]) << 16) }
            default:
                return (0..<n).map { Float(ElementCodec.decode(dtype, raw.baseAddress!, index: $0)) }
            }
        }
    }

    /// Every element as an `Int64`, row-major (integer and bool types only).
    public func int64s() throws -> [Int64] {
        try withUnsafeBytes { raw in
            let p = raw.baseAddress!
            return try (0..<elementCount).map { i throws(TensorError) -> Int64 in
                switch dtype {
                case .bool, .u8: Int64(p.load(fromByteOffset: i, as: UInt8.self))
                case .i8: Int64(p.load(fromByteOffset: i, as: Int8.self))
                case .i16: Int64(p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
                case .u16: Int64(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                case .i32: Int64(p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
                case .u32: Int64(p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                case .i64: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)
                case .u64: Int64(bitPattern: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                default: throw .unsupportedConversion(from: dtype, to: .i64)
                }
            }
        }
    }

    /// An owned, contiguous copy converted to `target` (float types round to nearest even; NaN stays NaN).
    public func converted(to target: DType) throws -> Tensor {
        if target == dtype { return try contiguous() }
        let encodable: Set<DType> = [.bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64, .f16, .bf16, .f32, .f64]
        guard dtype.isScalarConvertible, encodable.contains(target), let width = target.byteWidth else {
            throw TensorError.unsupportedConversion(from: dtype, to: target)
        }
        let values = try doubles()
        let out = Storage(zeroedByteCount: values.count * width)
        let dst = out.mutableBaseAddress!
        for (i, v) in values.enumerated() { ElementCodec.encode(v, as: target, into: dst, index: i) }
        return try Tensor(dtype: target, shape: shape, storage: out)
    }
}
