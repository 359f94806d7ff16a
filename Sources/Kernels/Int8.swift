// Products with int8 weights computed in int8: the activations are quantized per row at run time (asymmetric: 256
// levels over the row's range, with a zero point; measured against symmetric ±127 it halves the added KL on the
// fitted records), multiplied with the weights as stored — int8 per output channel, [out, in] — in exact int32 sums,
// and rescaled to float32. AVX-512 VNNI does the sums where the CPU has it; elsewhere the widened float32 product
// runs (faster there than scalar integers), unless AMUSED_COMPUTE=int8 asks for the portable integer kernel, which
// gives bit-identical results.

import CGemm

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Kernels {
    /// How weights stored in int8 are multiplied.
    public enum Int8Compute: String, Sendable {
        /// Widened to float32 for every product (the reference; `AMUSED_COMPUTE=f32`).
        case widened
        /// int8 × int8 → int32 with AVX-512 VNNI.
        case vnni
        /// int8 × int8 → int32 in portable C, bit-identical to `vnni` (`AMUSED_COMPUTE=int8` on a CPU without VNNI).
        case portable
    }

    /// Whether this CPU has the int8 dot-product instructions the fast path needs.
    public static let hasVNNI = amused_igemm_cpu_supported() == 1

    /// The choice for this process: `AMUSED_COMPUTE=f32` widens, `int8` forces integer products (VNNI or portable);
    /// unset, integer products run where VNNI exists and weights are widened elsewhere.
    public static let int8Compute: Int8Compute = int8Compute(
        environment: getenv("AMUSED_COMPUTE").map { String(cString: $0) })

    /// The choice `AMUSED_COMPUTE=value` makes on this CPU (nil: unset).
    public static func int8Compute(environment value: String?) -> Int8Compute {
        switch value {
        case "f32"?: .widened
        case "int8"?: hasVNNI ? .vnni : .portable
        default: hasVNNI ? .vnni : .widened
        }
    }

    /// y[m×n] (row stride ldy) = x[m×k] · Wᵀ + bias with W the int8 matrix [n, k] (row stride k) and its per-row
    /// `scales`, through `mode` (not `.widened`). Activations are quantized per row first.
    public static func int8Linear(
        m: Int, n: Int, k: Int, x: UnsafePointer<Float>, weight: UnsafePointer<Int8>, scales: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, ldy: Int, mode: Int8Compute = int8Compute
    ) {
        precondition(mode != .widened, "int8Linear needs an integer mode")
        guard m > 0, n > 0 else { return }
        // The quantized rows (k bytes each, rounded up to 4) and their scales, in one pooled float buffer.
        let rowBytes = (k + 3) / 4 * 4
        withScratch(m * rowBytes / 4 + 2 * m) { scratch in
            let q = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: UInt8.self)
            let rowScale = scratch + m * rowBytes / 4
            let rowZero = UnsafeMutableRawPointer(rowScale + m).assumingMemoryBound(to: Int32.self)
            Parallel.chunks(m, cost: k) { r in
                amused_quantize_rows_u8(
                    r.count, k, x + r.lowerBound * k, k, q + r.lowerBound * rowBytes, rowBytes, rowScale + r.lowerBound,
                    rowZero + r.lowerBound)
            }
            // Columns (weight rows) are split between threads in whole 32-column panels; each thread packs its own
            // panels and sweeps every activation row.
            let panels = (n + 31) / 32
            Parallel.chunks(panels, cost: 32 * m * k) { range in
                let c = (range.lowerBound * 32)..<min(n, range.upperBound * 32)
                let w = weight + c.lowerBound * k, b = bias.map { $0 + c.lowerBound }
                if mode == .vnni {
                    withScratch(32 * rowBytes / 4) { pack in
                        amused_igemm_u8s8(
                            m, c.count, k, q, rowBytes, w, k, rowScale, rowZero, scales + c.lowerBound, b,
                            y + c.lowerBound,
                            ldy, UnsafeMutableRawPointer(pack).assumingMemoryBound(to: Int8.self))
                    }
                } else {
                    amused_igemm_u8s8_portable(
                        m, c.count, k, q, rowBytes, w, k, rowScale, rowZero, scales + c.lowerBound, b, y + c.lowerBound,
                        ldy)
                }
            }
        }
    }
}
