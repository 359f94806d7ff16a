// Encoding float32 weights into the stored schemes (AmusedCore's QuantizedTensor is the stored form the graph runs
// from; making it is the quantize stage's job), with what each encoding cost, measured on the values it came from.

import AmusedCore
import Foundation

/// How far a quantized tensor's values moved, measured on the float32 values it was made from.
public struct QuantizationStats: Sendable, Equatable {
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

extension QuantizedTensor {
    /// Test hook: `AMUSED_TEST_BREAK_QUANTIZER=shifted-scales` makes int8 quantization store each row's scale in
    /// the next row's place, a classic indexing bug. The tests use it to show that the tolerance profiles fail a
    /// broken quantizer; nothing else reads it.
    static let brokenScales = getenv("AMUSED_TEST_BREAK_QUANTIZER").map { String(cString: $0) } == "shifted-scales"

    /// Quantizes contiguous float32 `values` of `shape`; returns the tensor and how far it moved.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, shape: [Int], scheme: QuantScheme)
        throws(TensorError) -> (tensor: QuantizedTensor, error: QuantizationStats)
    {
        guard let layout = scheme.buffers(for: shape) else {
            throw .invalidView("scheme \(scheme) cannot hold a tensor of shape \(describeShape(shape))")
        }
        let (rows, columns) = matrix(shape)
        guard values.count == rows * columns else {
            throw .invalidView("\(values.count) values for shape \(describeShape(shape))")
        }
        if scheme.isInteger, let i = (0..<values.count).first(where: { !values[$0].isFinite }) {
            throw .invalidView(
                "value \(i) is \(values[i]); integer quantization needs finite weights (keep this tensor "
                    + "in f32 or f16 with a policy rule)")
        }
        let storages = layout.map { Storage(zeroedByteCount: $0.shape.reduce(1, *) * ($0.dtype.bitWidth / 8)) }
        let out = storages.map { $0.mutableBaseAddress! }
        let src = values.baseAddress!
        var err = QuantizationStats()
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
                let s = int8Row(src + r * columns, columns: columns, into: q + r * columns)
                // The test hook stores each row's scale one row down (an off-by-one), the values staying right.
                scales[Self.brokenScales ? (r + 1) % rows : r] = s
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
}
