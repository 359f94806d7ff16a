// Row-wise and element-wise float32 kernels: norms, activations, softmax. Rows are split across the cores.

import CGemm
import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Splits work over the machine's cores.
public enum Parallel {
    /// Number of worker chunks to use (the active processor count).
    public static let width = max(1, ProcessInfoShim.activeProcessorCount)

    /// Calls `body(range)` on disjoint chunks covering `0..<count`, in parallel when the work is large enough.
    /// `cost` is the approximate work per item (in float operations), used to keep tiny loops on one thread.
    public static func chunks(_ count: Int, cost: Int = 1, _ body: (Range<Int>) -> Void) {
        let pieces = count * cost < 32_768 ? 1 : min(width, count)
        if pieces <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // The chunks touch disjoint ranges; the caller guarantees that is safe to run concurrently.
            let work = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: pieces) { i in
                let lo = count * i / pieces, hi = count * (i + 1) / pieces
                if hi > lo { work.value(lo..<hi) }
            }
        }
    }
}

/// Carries a value the caller knows is safe to share across the chunks of one parallel loop.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The processor count without importing Foundation into the kernels.
enum ProcessInfoShim {
    static var activeProcessorCount: Int {
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? n : 1
    }
}

/// A float32 pointer that may be shared by chunks writing disjoint ranges.
public struct SharedPointer: @unchecked Sendable {
    /// The address.
    public let p: UnsafeMutablePointer<Float>
    /// Wraps `p`.
    public init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
}

extension Kernels {
    /// Σ f(row[i]) over sixteen running sums (lane l adds f of elements l, l+16, …; a ragged tail's missing lanes add
    /// nothing), their halves then added pairwise: sixteen independent chains where one sum would wait on every add.
    /// The norms' statistics and the portable softmax use it (the AVX-512 softmax sums in the same order); the order
    /// differs from a left-to-right sum by float32 rounding only.
    @inline(__always)
    static func laneSum(
        _ row: UnsafePointer<Float>, _ dim: Int, _ f: (SIMD16<Float>) -> SIMD16<Float>
    ) -> Float {
        var lanes = SIMD16<Float>(repeating: 0)
        var i = 0
        while i + 16 <= dim {
            lanes += f(UnsafeRawPointer(row + i).loadUnaligned(as: SIMD16<Float>.self))
            i += 16
        }
        if i < dim {
            var tail = SIMD16<Float>(repeating: 0)
            for k in 0..<(dim - i) { tail[k] = row[i + k] }
            var mapped = f(tail)
            for k in (dim - i)..<16 { mapped[k] = 0 }
            lanes += mapped
        }
        let h8 = lanes.lowHalf + lanes.highHalf, h4 = h8.lowHalf + h8.highHalf, h2 = h4.lowHalf + h4.highHalf
        return h2[0] + h2[1]
    }

    /// RMSNorm over the last dimension, in place: x · rsqrt(mean(x²) + eps) · weight (weight optional).
    public static func rmsNorm(
        _ x: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float,
        weight: UnsafePointer<Float>?
    ) {
        let xs = SharedPointer(x)
        Parallel.chunks(rows, cost: dim * 3) { range in
            for r in range {
                let row = xs.p + r * dim
                let sum = laneSum(row, dim) { $0 * $0 }
                let inv = 1 / (sum / Float(dim) + eps).squareRoot()
                if let weight {
                    for i in 0..<dim { row[i] = row[i] * inv * weight[i] }
                } else {
                    for i in 0..<dim { row[i] *= inv }
                }
            }
        }
    }

    /// LayerNorm over the last dimension, in place (biased variance, like torch), with optional weight and bias.
    public static func layerNorm(
        _ x: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float,
        weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?
    ) {
        let xs = SharedPointer(x)
        Parallel.chunks(rows, cost: dim * 4) { range in
            for r in range {
                let row = xs.p + r * dim
                let mean = laneSum(row, dim) { $0 } / Float(dim)
                let centre = SIMD16<Float>(repeating: mean)
                let variance = laneSum(row, dim) { ($0 - centre) * ($0 - centre) }
                let inv = 1 / (variance / Float(dim) + eps).squareRoot()
                for i in 0..<dim {
                    var v = (row[i] - mean) * inv
                    if let weight { v *= weight[i] }
                    if let bias { v += bias[i] }
                    row[i] = v
                }
            }
        }
    }

    /// GroupNorm of one NCHW image (channels × spatial), in place, with per-channel affine; optionally fused SiLU.
    public static func groupNorm(
        _ x: UnsafeMutablePointer<Float>, channels: Int, spatial: Int, groups: Int,
        eps: Float, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
        silu: Bool = false
    ) {
        let perGroup = channels / groups
        let xs = SharedPointer(x)
        Parallel.chunks(groups, cost: perGroup * spatial * 4) { range in
            for g in range {
                let base = xs.p + g * perGroup * spatial
                let n = perGroup * spatial
                // Two-pass mean and variance: float vector sums over blocks of 1024, blocks added in double, which
                // matches torch's float32 statistics to well under 1e-6.
                func blockSums(_ f: (SIMD8<Float>) -> SIMD8<Float>) -> Double {
                    var total = 0.0
                    var i = 0
                    while i < n {
                        let end = min(n, i + 1024)
                        var acc = SIMD8<Float>()
                        while i + 8 <= end {
                            acc += f(UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<Float>.self))
                            i += 8
                        }
                        var partial = Double(acc.sum())
                        while i < end {
                            partial += Double(f(SIMD8<Float>(repeating: base[i]))[0])
                            i += 1
                        }
                        total += partial
                    }
                    return total
                }
                let mean = blockSums { $0 } / Double(n)
                let mf = Float(mean)
                let variance = blockSums { ($0 - mf) * ($0 - mf) }
                let inv = Float(1 / (variance / Double(n) + Double(eps)).squareRoot())
                let m = mf
                for c in 0..<perGroup {
                    let channel = g * perGroup + c
                    let w = weight?[channel] ?? 1, b = bias?[channel] ?? 0
                    let row = base + c * spatial
                    for i in 0..<spatial { row[i] = (row[i] - m) * inv * w + b }
                    if silu { FastMath.apply(row, spatial, .silu) }
                }
            }
        }
    }

    /// SiLU in place: x · sigmoid(x).
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        elementwise(x, count: count, .silu)
    }

    /// Exact (erf) GELU in place, as torch's `nn.GELU()`.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        elementwise(x, count: count, .gelu)
    }

    /// quick_gelu in place: x · sigmoid(1.702 x) (CLIP's activation).
    public static func quickGelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        elementwise(x, count: count, .quickGelu)
    }

    /// Applies a vector function to `count` floats in place, split over the cores in blocks of whole vectors.
    public static func elementwise(_ x: UnsafeMutablePointer<Float>, count: Int, _ f: FastMath.Function) {
        let xs = SharedPointer(x)
        let blocks = (count + 1023) / 1024
        Parallel.chunks(blocks, cost: 1024 * 8) { range in
            let lo = range.lowerBound * 1024, hi = min(count, range.upperBound * 1024)
            FastMath.apply(xs.p + lo, hi - lo, f)
        }
    }

    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ dim: Int) {
        if FastMath.vectorized { amused_softmax_row(row, dim) } else { softmaxRowPortable(row, dim) }
    }

    /// The softmax in Swift, bit-identical to its C twin (`amused_softmax_row`): the maximum ignoring NaN,
    /// e^(x − max), the sum over sixteen running sums (lane l adds elements l, l+16, …) whose halves are then added
    /// pairwise — an order both paths can keep, and 16 chains instead of one — then each value times 1/sum.
    public static func softmaxRowPortable(_ row: UnsafeMutablePointer<Float>, _ dim: Int) {
        var maxValue = -Float.infinity
        for i in 0..<dim where row[i] > maxValue { maxValue = row[i] }
        FastMath.applyPortable(row, dim, .expShifted(maxValue))
        let inv = 1 / laneSum(row, dim) { $0 }
        for i in 0..<dim { row[i] *= inv }
    }

    /// y += x, element-wise.
    public static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// Adds `bias[c]` to every row of `rows × dim`.
    public static func addBias(_ y: UnsafeMutablePointer<Float>, rows: Int, dim: Int, bias: UnsafePointer<Float>) {
        addBias(y, rows: rows, dim: dim, ldy: dim, bias: bias)
    }

    /// Adds `bias[c]` to the first `dim` values of every row of `y` (row stride `ldy`), rows split over the cores.
    public static func addBias(
        _ y: UnsafeMutablePointer<Float>, rows: Int, dim: Int, ldy: Int, bias: UnsafePointer<Float>
    ) {
        let ys = SharedPointer(y), bs = UncheckedSendable(bias)
        Parallel.chunks(rows, cost: dim) { range in
            let bias = bs.value
            for r in range {
                let row = ys.p + r * ldy
                for i in 0..<dim { row[i] += bias[i] }
            }
        }
    }
}

extension Kernels {
    /// `dst` [columns, rows] = `src` [rows, columns]ᵀ, row-major, for `batch` matrices stored one after another (NHWC ↔
    /// NCHW). Copies in 32×32 tiles so both sides stay in cache, tiles split over the cores.
    public static func transpose(
        _ src: UnsafePointer<Float>, rows: Int, columns: Int, batch: Int = 1,
        into dst: UnsafeMutablePointer<Float>
    ) {
        let tile = 32
        let rowTiles = (rows + tile - 1) / tile
        let s = SharedPointer(UnsafeMutablePointer(mutating: src)), d = SharedPointer(dst)
        Parallel.chunks(batch * rowTiles, cost: tile * columns) { range in
            for item in range {
                let b = item / rowTiles, r0 = (item % rowTiles) * tile, r1 = min(r0 + tile, rows)
                let from = s.p + b * rows * columns, to = d.p + b * rows * columns
                var c0 = 0
                while c0 < columns {
                    let c1 = min(c0 + tile, columns)
                    for r in r0..<r1 {
                        for c in c0..<c1 { to[c * rows + r] = from[r * columns + c] }
                    }
                    c0 = c1
                }
            }
        }
    }
}
