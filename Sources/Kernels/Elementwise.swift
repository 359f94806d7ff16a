// Row-wise and element-wise float32 kernels: norms, activations, softmax. Rows are split across the cores.

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
    /// RMSNorm over the last dimension, in place: x · rsqrt(mean(x²) + eps) · weight (weight optional).
    public static func rmsNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float,
                               weight: UnsafePointer<Float>?) {
        let xs = SharedPointer(x)
        Parallel.chunks(rows, cost: dim * 3) { range in
            for r in range {
                let row = xs.p + r * dim
                var sum: Float = 0
                for i in 0..<dim { sum += row[i] * row[i] }
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
    public static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float,
                                 weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?) {
        let xs = SharedPointer(x)
        Parallel.chunks(rows, cost: dim * 4) { range in
            for r in range {
                let row = xs.p + r * dim
                var mean: Float = 0
                for i in 0..<dim { mean += row[i] }
                mean /= Float(dim)
                var variance: Float = 0
                for i in 0..<dim {
                    let d = row[i] - mean
                    variance += d * d
                }
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
    public static func groupNorm(_ x: UnsafeMutablePointer<Float>, channels: Int, spatial: Int, groups: Int,
                                 eps: Float, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                 silu: Bool = false) {
        let perGroup = channels / groups
        let xs = SharedPointer(x)
        Parallel.chunks(groups, cost: perGroup * spatial * 4) { range in
            for g in range {
                let base = xs.p + g * perGroup * spatial
                let n = perGroup * spatial
                // Two-pass mean and variance in double: matches torch's float32 result to well under 1e-6.
                var mean = 0.0
                for i in 0..<n { mean += Double(base[i]) }
                mean /= Double(n)
                var variance = 0.0
                for i in 0..<n {
                    let d = Double(base[i]) - mean
                    variance += d * d
                }
                let inv = Float(1 / (variance / Double(n) + Double(eps)).squareRoot())
                let m = Float(mean)
                for c in 0..<perGroup {
                    let channel = g * perGroup + c
                    let w = weight?[channel] ?? 1, b = bias?[channel] ?? 0
                    let row = base + c * spatial
                    for i in 0..<spatial {
                        var v = (row[i] - m) * inv * w + b
                        if silu { v = v / (1 + expf(-v)) }
                        row[i] = v
                    }
                }
            }
        }
    }

    /// SiLU in place: x · sigmoid(x).
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let xs = SharedPointer(x)
        Parallel.chunks(count, cost: 20) { range in
            for i in range { xs.p[i] = xs.p[i] / (1 + expf(-xs.p[i])) }
        }
    }

    /// Exact (erf) GELU in place, as torch's `nn.GELU()`.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let xs = SharedPointer(x)
        Parallel.chunks(count, cost: 30) { range in
            for i in range {
                let v = xs.p[i]
                xs.p[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752))
            }
        }
    }

    /// quick_gelu in place: x · sigmoid(1.702 x) (CLIP's activation).
    public static func quickGelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let xs = SharedPointer(x)
        Parallel.chunks(count, cost: 20) { range in
            for i in range {
                let v = xs.p[i]
                xs.p[i] = v / (1 + expf(-1.702 * v))
            }
        }
    }

    /// Softmax over each row of `rows × dim`, in place.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        let xs = SharedPointer(x)
        Parallel.chunks(rows, cost: dim * 20) { range in
            for r in range { softmaxRow(xs.p + r * dim, dim) }
        }
    }

    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ dim: Int) {
        var maxValue = -Float.infinity
        for i in 0..<dim where row[i] > maxValue { maxValue = row[i] }
        var sum: Float = 0
        for i in 0..<dim {
            let e = expf(row[i] - maxValue)
            row[i] = e
            sum += e
        }
        let inv = 1 / sum
        for i in 0..<dim { row[i] *= inv }
    }

    /// y += x, element-wise.
    public static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// Adds `bias[c]` to every row of `rows × dim`.
    public static func addBias(_ y: UnsafeMutablePointer<Float>, rows: Int, dim: Int, bias: UnsafePointer<Float>) {
        for r in 0..<rows {
            let row = y + r * dim
            for i in 0..<dim { row[i] += bias[i] }
        }
    }
}
