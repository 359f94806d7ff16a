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
            return [("data", .u8, [rows, columns / 2]), ("scales", .f16, [rows, columns / g]),
                    ("minimums", .f16, [rows, columns / g])]
        }
    }

    /// Bytes a tensor of `shape` takes in this scheme (nil when it does not fit).
    public func byteCount(for shape: [Int]) -> Int? {
        buffers(for: shape)?.reduce(0) { $0 + $1.shape.reduce(1, *) * ($1.dtype.bitWidth / 8) }
    }
}

/// How far a quantized tensor's values moved, measured on the float32 values it was made from.
public struct QuantizationError: Sendable, Equatable {
    /// max |dequantized − original|.
    public var maxAbs: Double = 0
    /// sqrt(mean (dequantized − original)²).
    public var rms: Double = 0
    /// sqrt(mean original²), to judge `rms` against.
    public var rmsValue: Double = 0
    /// float16: finite values beyond ±65504 that became ±infinity.
    public var overflows = 0
    /// float16/bfloat16: non-zero values that became zero.
    public var underflows = 0
    /// float16: values that became subnormal (kept, with fewer significant bits).
    public var subnormals = 0

    /// No error yet.
    public init() {}

    /// rms / rmsValue (0 for an all-zero tensor).
    public var relativeRMS: Double { rmsValue > 0 ? rms / rmsValue : 0 }
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
                throw .invalidView("\(scheme) \(want.role) buffer must be contiguous \(want.dtype.rawValue) "
                    + "\(describeShape(want.shape)); got \(have.dtype.rawValue) \(describeShape(have.shape))")
            }
        }
        self.scheme = scheme
        self.shape = shape
        (rows, columns) = Self.matrix(shape)
        self.buffers = buffers
    }

    /// Number of logical elements.
    public var elementCount: Int { rows * columns }

    /// Bytes of all buffers.
    public var byteCount: Int { buffers.reduce(0) { $0 + $1.byteCount } }

    /// Test hook: `AMUSED_TEST_BREAK_QUANTIZER=shifted-scales` makes int8 quantization store each row's scale in
    /// the next row's place, a classic indexing bug. The tests use it to show that the tolerance profiles fail a
    /// broken quantizer; nothing else reads it.
    static let brokenScales = getenv("AMUSED_TEST_BREAK_QUANTIZER").map { String(cString: $0) } == "shifted-scales"

    /// Quantizes contiguous float32 `values` of `shape`; returns the tensor and how far it moved.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, shape: [Int], scheme: QuantScheme)
        throws(TensorError) -> (tensor: QuantizedTensor, error: QuantizationError)
    {
        guard let layout = scheme.buffers(for: shape) else {
            throw .invalidView("scheme \(scheme) cannot hold a tensor of shape \(describeShape(shape))")
        }
        let (rows, columns) = matrix(shape)
        guard values.count == rows * columns else {
            throw .invalidView("\(values.count) values for shape \(describeShape(shape))")
        }
        if scheme.isInteger, let i = (0..<values.count).first(where: { !values[$0].isFinite }) {
            throw .invalidView("value \(i) is \(values[i]); integer quantization needs finite weights (keep this tensor "
                + "in f32 or f16 with a policy rule)")
        }
        let storages = layout.map { Storage(zeroedByteCount: $0.shape.reduce(1, *) * ($0.dtype.bitWidth / 8)) }
        let out = storages.map { $0.mutableBaseAddress! }
        let src = values.baseAddress!
        var err = QuantizationError()
        switch scheme {
        case .f32:
            out[0].copyMemory(from: src, byteCount: values.count * 4)
        case .f16, .bf16:
            let dst = out[0].assumingMemoryBound(to: UInt16.self)
            for i in 0..<values.count {
                let v = src[i]
                let h = scheme == .f16 ? FloatBits.floatToHalf(v) : FloatBits.floatToBFloat(v)
                dst[i] = h
                let back = scheme == .f16 ? FloatBits.halfToFloat(h) : FloatBits.bfloatToFloat(h)
                if v.isFinite && back.isInfinite { err.overflows += 1 }
                if v != 0 && back == 0 { err.underflows += 1 }
                if scheme == .f16 && back != 0 && abs(back) < 0x1p-14 && back.isFinite { err.subnormals += 1 }
            }
        case .int8:
            let q = out[0].assumingMemoryBound(to: Int8.self), scales = out[1].assumingMemoryBound(to: Float.self)
            for r in 0..<rows {
                let row = src + r * columns
                var peak: Float = 0
                for c in 0..<columns { peak = max(peak, abs(row[c])) }
                // An all-zero row keeps scale 1 so that dequantization never divides or multiplies by zero twice.
                let s: Float = peak > 0 ? peak / 127 : 1
                // The test hook stores each row's scale one row down (an off-by-one), the values staying right.
                scales[Self.brokenScales ? (r + 1) % rows : r] = s
                // torch multiplies by the float32 reciprocal of the scale rather than dividing (ties can differ).
                let inverse = 1 / s
                for c in 0..<columns {
                    q[r * columns + c] = Int8(max(-127, min(127, (row[c] * inverse).rounded(.toNearestOrEven))))
                }
            }
        case .int4(let g):
            let q = out[0].assumingMemoryBound(to: UInt8.self)
            let scales = out[1].assumingMemoryBound(to: UInt16.self), mins = out[2].assumingMemoryBound(to: UInt16.self)
            let groups = columns / g
            for r in 0..<rows {
                for k in 0..<groups {
                    let group = src + r * columns + k * g
                    var lo = group[0], hi = group[0]
                    for c in 0..<g {
                        lo = min(lo, group[c])
                        hi = max(hi, group[c])
                    }
                    // Scale and minimum are rounded to float16 first and the codes computed with the rounded values,
                    // so dequantization (q · s + m with the stored s and m) is what the codes were chosen for.
                    let mh = FloatBits.floatToHalf(lo), sh = FloatBits.floatToHalf((hi - lo) / 15)
                    let m = FloatBits.halfToFloat(mh), s = FloatBits.halfToFloat(sh)
                    scales[r * groups + k] = sh
                    mins[r * groups + k] = mh
                    let base = (r * columns + k * g) / 2
                    let inverse: Float = s > 0 ? 1 / s : 0
                    for c in stride(from: 0, to: g, by: 2) {
                        let a = max(0, min(15, ((group[c] - m) * inverse).rounded(.toNearestOrEven)))
                        let b = max(0, min(15, ((group[c + 1] - m) * inverse).rounded(.toNearestOrEven)))
                        q[base + c / 2] = UInt8(a) | UInt8(b) << 4
                    }
                }
            }
        }
        let buffers = try zip(layout, storages).map { (l, s) throws(TensorError) in
            try Tensor(dtype: l.dtype, shape: l.shape, storage: s)
        }
        let tensor = try QuantizedTensor(scheme: scheme, shape: shape, buffers: buffers)
        // The error, measured on what dequantization gives back, a band of rows at a time.
        let band = max(1, min(rows, 65_536 / max(columns, 1)))
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: band * columns)
        defer { scratch.deallocate() }
        var sumSq = 0.0, sumRef = 0.0
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + band)
            tensor.dequantizeRows(r0..<r1, into: scratch)
            for i in 0..<((r1 - r0) * columns) {
                let a = Double(src[r0 * columns + i]), b = Double(scratch[i])
                let d = a.isFinite && b.isFinite ? abs(b - a) : (a == b ? 0 : .infinity)
                err.maxAbs = max(err.maxAbs, d)
                sumSq += d * d
                sumRef += a * a
            }
            r0 = r1
        }
        let n = Double(max(1, rows * columns))
        err.rms = (sumSq / n).squareRoot()
        err.rmsValue = (sumRef / n).squareRoot()
        return (tensor, err)
    }

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
            let scales = base[1].assumingMemoryBound(to: UInt16.self), mins = base[2].assumingMemoryBound(to: UInt16.self)
            let groups = columns / g
            for (k, r) in range.enumerated() {
                let dst = out + k * columns
                for j in 0..<groups {
                    let s = FloatBits.halfToFloat(scales[r * groups + j]), m = FloatBits.halfToFloat(mins[r * groups + j])
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
