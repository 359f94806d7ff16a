// Products with bfloat16 weights computed in bfloat16: the activations are rounded to bfloat16 per call (nearest
// even) and multiplied with the weights as stored by AVX512_BF16's VDPBF16PS, accumulating in float32. Where the CPU
// lacks the instruction, or with AMUSED_COMPUTE=f32, the weights are widened to float32 instead.

import CGemm

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Kernels {
    /// Whether this CPU has the bfloat16 dot-product instruction (AVX512_BF16).
    public static let hasBF16 = amused_bf16gemm_cpu_supported() == 1

    /// Whether bfloat16 weights multiply in bfloat16 in this process: the CPU has AVX512_BF16 and AMUSED_COMPUTE is not
    /// `f32`.
    public static let bf16Compute = bf16Compute(environment: getenv("AMUSED_COMPUTE").map { String(cString: $0) })

    /// The choice `AMUSED_COMPUTE=value` makes on this CPU (nil: unset).
    public static func bf16Compute(environment value: String?) -> Bool { hasBF16 && value != "f32" }

    /// y[m×n] (row stride ldy) = bf16(x[m×k]) · Wᵀ + bias with W the bfloat16 matrix [n, k] (row stride k). Requires
    /// `hasBF16`.
    public static func bf16Linear(
        m: Int, n: Int, k: Int, x: UnsafePointer<Float>, weight: UnsafePointer<UInt16>, bias: UnsafePointer<Float>?,
        y: UnsafeMutablePointer<Float>, ldy: Int
    ) {
        precondition(hasBF16, "bf16Linear needs AVX512_BF16")
        guard m > 0, n > 0 else { return }
        let rowValues = (k + 1) / 2 * 2
        // The rounded rows (two bytes a value) in one pooled float buffer.
        withScratch(m * rowValues / 2) { scratch in
            let a = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: UInt16.self)
            Parallel.chunks(m, cost: k) { r in
                amused_bf16_rows(r.count, k, x + r.lowerBound * k, k, a + r.lowerBound * rowValues, rowValues)
            }
            let panels = (n + 31) / 32
            Parallel.chunks(panels, cost: 32 * m * k) { range in
                let c = (range.lowerBound * 32)..<min(n, range.upperBound * 32)
                withScratch(32 * rowValues / 2) { pack in
                    amused_bf16gemm(
                        m, c.count, k, a, rowValues, weight + c.lowerBound * k, k, bias.map { $0 + c.lowerBound },
                        y + c.lowerBound, ldy, UnsafeMutableRawPointer(pack).assumingMemoryBound(to: UInt16.self))
                }
            }
        }
    }
}
