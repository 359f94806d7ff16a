// Weights stored below float32: half and bfloat16 copies, int8 per output channel, int4 in affine groups. A weight is
// seen as a matrix of `rows` output channels by `columns` inputs (a convolution's [out, in, kh, kw] is [out, in·kh·kw]);
// each scheme quantizes along the rows so a layer can widen any band of output channels on its own.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a weight's values are stored.
public enum QuantScheme: Sendable, Hashable, CustomStringConvertible {
    /// float32, unchanged.
    case f32
    /// IEEE half, rounded to nearest even.
    case f16
    /// bfloat16, rounded to nearest even.
    case bf16
    /// int8 symmetric per output channel: q = round(w · (1/s)) in [−127, 127] (half to even, as
    /// `torch.quantize_per_channel` computes it), s = max|w_row| / 127 in float32.
    case int8
    /// int4 affine in groups of `group` inputs along each row: q = round((w − m) · (1/s)) in [0, 15] with the group's
    /// minimum m and s = (max − m) / 15, both stored as float16; two values per byte, the even index in the low nibble.
    case int4(group: Int)

    /// The name used in policies, plans and bundle manifests: `f32`, `f16`, `bf16`, `int8`, `int4g64`, ….
    public var description: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        case .bf16: "bf16"
        case .int8: "int8"
        case .int4(let g): "int4g\(g)"
        }
    }

    /// Parses a scheme name (`int4` alone means groups of 64).
    public init?(name: String) {
        switch name {
        case "f32": self = .f32
        case "f16": self = .f16
        case "bf16": self = .bf16
        case "int8": self = .int8
        case "int4": self = .int4(group: 64)
        default:
            guard name.hasPrefix("int4g"), let g = Int(name.dropFirst(5)), [32, 64, 128].contains(g) else { return nil }
            self = .int4(group: g)
        }
    }

    /// True for the integer schemes, which need a row structure (scales per output channel or group).
    public var isInteger: Bool {
        switch self {
        case .int8, .int4: true
        default: false
        }
    }

    /// The buffers a tensor of `shape` occupies in this scheme: role (`data`, `scales`, `minimums`), dtype and shape.
    /// Nil when the shape does not fit the scheme (no rows, or int4 columns not a multiple of the group).
    public func buffers(for shape: [Int]) -> [(role: String, dtype: DType, shape: [Int])]? {
        // Shapes whose float32 size overflows are refused first, so the products below cannot overflow.
        guard SizeMath.byteCount(shape: shape, dtype: .f32) != nil else { return nil }
        switch self {
        case .f32: return [("data", .f32, shape)]
        case .f16: return [("data", .f16, shape)]
        case .bf16: return [("data", .bf16, shape)]
        case .int8:
            guard shape.count >= 2 else { return nil }
            let (rows, columns) = QuantizedTensor.matrix(shape)
            return [("data", .i8, [rows, columns]), ("scales", .f32, [rows])]
        case .int4(let g):
            guard shape.count >= 2 else { return nil }
            let (rows, columns) = QuantizedTensor.matrix(shape)
            guard columns % g == 0, g % 2 == 0 else { return nil }
            return [
                ("data", .u8, [rows, columns / 2]), ("scales", .f16, [rows, columns / g]),
                ("minimums", .f16, [rows, columns / g]),
            ]
        }
    }

    /// Bytes a tensor of `shape` takes in this scheme (nil when it does not fit).
    public func byteCount(for shape: [Int]) -> Int? {
        buffers(for: shape)?.reduce(0) { $0 + $1.shape.reduce(1, *) * ($1.dtype.bitWidth / 8) }
    }
}

/// A weight in one of the `QuantScheme`s: its logical shape and the buffers holding it (each a contiguous tensor,
/// owned or a view of a mapped bundle).
public struct QuantizedTensor: Sendable {
    /// The scheme.
    public let scheme: QuantScheme
    /// The weight's logical shape (the float32 shape it stands for).
    public let shape: [Int]
    /// `shape[0]` (output channels).
    public let rows: Int
    /// The product of the other dimensions.
    public let columns: Int
    /// The buffers in `scheme.buffers(for:)` order.
    public let buffers: [Tensor]

    /// The matrix view of `shape`: rows = shape[0], columns = the product of the rest (1 for rank 1, 0 rank: 1 × 1).
    public static func matrix(_ shape: [Int]) -> (rows: Int, columns: Int) {
        guard let first = shape.first else { return (1, 1) }
        return (first, shape.dropFirst().reduce(1, *))
    }

    /// Wraps buffers that must match `scheme.buffers(for: shape)` exactly (dtype, shape, contiguity).
    public init(scheme: QuantScheme, shape: [Int], buffers: [Tensor]) throws(TensorError) {
        guard let layout = scheme.buffers(for: shape) else {
            throw .invalidView("scheme \(scheme) cannot hold a tensor of shape \(describeShape(shape))")
        }
        guard layout.count == buffers.count else {
            throw .invalidView("scheme \(scheme) needs \(layout.count) buffers, got \(buffers.count)")
        }
        for (want, have) in zip(layout, buffers) {
            guard have.dtype == want.dtype, have.shape.reduce(1, *) == want.shape.reduce(1, *), have.isContiguous else {
                throw .invalidView(
                    "\(scheme) \(want.role) buffer must be contiguous \(want.dtype.rawValue) "
                        + "\(describeShape(want.shape)); got \(have.dtype.rawValue) \(describeShape(have.shape))")
            }
        }
        self.scheme = scheme
        self.shape = shape
        (rows, columns) = Self.matrix(shape)
        self.buffers = buffers
    }

    /// For the bf16 scheme, the stored values ([rows, columns] row-major); nil for other schemes.
    public var bf16Storage: UnsafePointer<UInt16>? {
        guard scheme == .bf16 else { return nil }
        return (buffers[0].storage.baseAddress + buffers[0].byteOffset).assumingMemoryBound(to: UInt16.self)
    }

    /// For the int8 scheme, the stored values ([rows, columns] row-major) and per-row scales; nil for other schemes.
    public var int8Storage: (values: UnsafePointer<Int8>, scales: UnsafePointer<Float>)? {
        guard scheme == .int8 else { return nil }
        let base = buffers.map { $0.storage.baseAddress + $0.byteOffset }
        return (base[0].assumingMemoryBound(to: Int8.self), base[1].assumingMemoryBound(to: Float.self))
    }

    /// int8's rule (`QuantScheme.int8`) for one row of `columns` values: writes the codes to `q` and returns the
    /// row's scale. The quantizer and `int4AsInt8()` share it.
    public static func int8Row(_ row: UnsafePointer<Float>, columns: Int, into q: UnsafeMutablePointer<Int8>) -> Float {
        var peak: Float = 0
        for c in 0..<columns { peak = max(peak, abs(row[c])) }
        // An all-zero row keeps scale 1 so that dequantization never divides or multiplies by zero twice.
        let s: Float = peak > 0 ? peak / 127 : 1
        // torch multiplies by the float32 reciprocal of the scale rather than dividing (ties can differ).
        let inverse = 1 / s
        for c in 0..<columns { q[c] = Int8(max(-127, min(127, (row[c] * inverse).rounded(.toNearestOrEven)))) }
        return s
    }

    /// An int4 weight re-expressed as int8 per output channel, so that it computes through the int8 kernel: each row
    /// dequantized exactly (q · s + m per group) and quantized again by int8's rule. That moves a value by at most
    /// half the row's int8 step, max|w| / 254 — less than half the int4 step of any group whose range is more than
    /// 12% of the row's largest magnitude. Nil for the other schemes.
    public func int4AsInt8() -> QuantizedTensor? {
        guard case .int4 = scheme else { return nil }
        let values = Storage(zeroedByteCount: rows * columns), scales = Storage(zeroedByteCount: rows * 4)
        let q = values.mutableBaseAddress!.assumingMemoryBound(to: Int8.self)
        let s = scales.mutableBaseAddress!.assumingMemoryBound(to: Float.self)
        let row = UnsafeMutablePointer<Float>.allocate(capacity: columns)
        defer { row.deallocate() }
        for r in 0..<rows {
            dequantizeRows(r..<(r + 1), into: row)
            s[r] = Self.int8Row(row, columns: columns, into: q + r * columns)
        }
        // The shapes are int8's for this tensor's own (valid) shape, so the wrapping cannot fail.
        return try! QuantizedTensor(
            scheme: .int8, shape: shape,
            buffers: [
                try! Tensor(dtype: .i8, shape: [rows, columns], storage: values),
                try! Tensor(dtype: .f32, shape: [rows], storage: scales),
            ])
    }

    /// Number of logical elements.
    public var elementCount: Int { rows * columns }

    /// Bytes of all buffers.
    public var byteCount: Int { buffers.reduce(0) { $0 + $1.byteCount } }

    /// Writes rows `range` as float32, row-major, to `out` (`range.count × columns` values).
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let base = buffers.map { $0.storage.baseAddress + $0.byteOffset }
        let first = range.lowerBound * columns, count = range.count * columns
        switch scheme {
        case .f32:
            out.update(from: base[0].assumingMemoryBound(to: Float.self) + first, count: count)
        case .f16:
            let src = base[0].assumingMemoryBound(to: UInt16.self) + first
            for i in 0..<count { out[i] = FloatBits.halfToFloatVectorisable(src[i]) }
        case .bf16:
            let src = base[0].assumingMemoryBound(to: UInt16.self) + first
            for i in 0..<count { out[i] = Float(bitPattern: UInt32(src[i]) << 16) }
        case .int8:
            let q = base[0].assumingMemoryBound(to: Int8.self), scales = base[1].assumingMemoryBound(to: Float.self)
            for (k, r) in range.enumerated() {
                let s = scales[r], row = q + r * columns, dst = out + k * columns
                for c in 0..<columns { dst[c] = Float(row[c]) * s }
            }
        case .int4(let g):
            let q = base[0].assumingMemoryBound(to: UInt8.self)
            let scales = base[1].assumingMemoryBound(to: UInt16.self),
                mins = base[2].assumingMemoryBound(to: UInt16.self)
            let groups = columns / g
            for (k, r) in range.enumerated() {
                let dst = out + k * columns
                for j in 0..<groups {
                    let s = FloatBits.halfToFloat(scales[r * groups + j]),
                        m = FloatBits.halfToFloat(mins[r * groups + j])
                    let bytes = q + (r * columns + j * g) / 2, d = dst + j * g
                    for c in 0..<(g / 2) {
                        let b = bytes[c]
                        d[2 * c] = Float(b & 15) * s + m
                        d[2 * c + 1] = Float(b >> 4) * s + m
                    }
                }
            }
        }
    }

    /// All values as float32 (a copy; for small tensors and tests).
    public func dequantized() throws(TensorError) -> Tensor {
        let storage = Storage(zeroedByteCount: elementCount * 4)
        dequantizeRows(0..<rows, into: storage.mutableBaseAddress!.assumingMemoryBound(to: Float.self))
        return try Tensor(dtype: .f32, shape: shape, storage: storage)
    }
}
