// Products with int8 weights computed in int8: the activations are quantized per row at run time (asymmetric: 256
// levels over the row's range, with a zero point; measured against symmetric ±127 it halves the added KL on the
// fitted records), multiplied with the weights as stored — int8 per output channel, [out, in] — in exact int32 sums,
// and rescaled to float32. AVX-512 VNNI does the sums where the CPU has it, AVX2's VPMADDWD on 16-bit pairs where it
// has only AVX2 (about 1.5 times the float32 product's speed on a Zen 3); elsewhere the widened float32 product runs
// (faster there than scalar integers), unless AMUSED_COMPUTE=int8 asks for the portable integer kernel. All three
// integer kernels give bit-identical results: integer sums do not depend on their order.

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
        /// int8 × int8 → int32 with AVX2 (16-bit pairs, VPMADDWD), bit-identical to `vnni`, on CPUs without VNNI.
        case avx2
        /// int8 × int8 → int32 in portable C, bit-identical to `vnni` (`AMUSED_COMPUTE=int8` on a CPU without VNNI or
        /// AVX2).
        case portable
    }

    /// Whether this CPU has the int8 dot-product instructions the fast path needs.
    public static let hasVNNI = amused_igemm_cpu_supported() == 1

    /// Whether this CPU has AVX2, which the integer kernel for CPUs without VNNI needs.
    public static let hasAVX2Int8 = amused_igemm_avx2_cpu_supported() == 1

    /// Whether that kernel is the default here: AVX2 without AVX-512F. VPMADDWD's rate is 1.54× the float32 FMA's on a
    /// Zen 3 (measured), but on an AVX-512 CPU without VNNI (Skylake-SP and kin) the float32 kernel's 512-bit FMAs
    /// match it before the quantizing is paid for, so there the weights are widened unless AMUSED_COMPUTE=int8.
    public static let prefersAVX2Int8 = hasAVX2Int8 && amused_sgemm_width() < 512

    /// The choice for this process: `AMUSED_COMPUTE=f32` widens; `int8` runs integer products with VNNI, else AVX2,
    /// else in portable C; unset, with VNNI, else with AVX2 where there is no AVX-512F (`prefersAVX2Int8`), else the
    /// weights are widened.
    public static let int8Compute: Int8Compute = int8Compute(
        environment: getenv("AMUSED_COMPUTE").map { String(cString: $0) })

    /// The choice `AMUSED_COMPUTE=value` makes on this CPU (nil: unset).
    public static func int8Compute(environment value: String?) -> Int8Compute {
        return switch value {
        case "f32"?: .widened
        case "int8"?: hasVNNI ? .vnni : hasAVX2Int8 ? .avx2 : .portable
        default: hasVNNI ? .vnni : prefersAVX2Int8 ? .avx2 : .widened
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
        // The quantized rows (k levels each, rounded up to 4, as bytes — or as 16-bit values for the AVX2 kernel) and
        // their scales, in one pooled float buffer.
        let rowLength = (k + 3) / 4 * 4, levelBytes = mode == .avx2 ? 2 : 1
        let rowFloats = rowLength * levelBytes / 4
        withScratch(m * rowFloats + 2 * m) { scratch in
            let q = UnsafeMutableRawPointer(scratch)
            let rowScale = scratch + m * rowFloats
            let rowZero = UnsafeMutableRawPointer(rowScale + m).assumingMemoryBound(to: Int32.self)
            Parallel.chunks(m, cost: k) { r in
                let x = x + r.lowerBound * k, scale = rowScale + r.lowerBound, zero = rowZero + r.lowerBound
                if mode == .avx2 {
                    let rows = q.assumingMemoryBound(to: UInt16.self) + r.lowerBound * rowLength
                    amused_quantize_rows_u16(r.count, k, x, k, rows, rowLength, scale, zero)
                } else {
                    let rows = q.assumingMemoryBound(to: UInt8.self) + r.lowerBound * rowLength
                    amused_quantize_rows_u8(r.count, k, x, k, rows, rowLength, scale, zero)
                }
            }
            // Columns (weight rows) are split between threads in whole 32-column panels; each thread packs its own
            // panels and sweeps every activation row.
            let panels = (n + 31) / 32
            Parallel.chunks(panels, cost: 32 * m * k) { range in
                let c = (range.lowerBound * 32)..<min(n, range.upperBound * 32)
                let w = weight + c.lowerBound * k, b = bias.map { $0 + c.lowerBound }
                let colScale = scales + c.lowerBound, out = y + c.lowerBound
                switch mode {
                case .vnni:
                    withScratch(32 * rowLength / 4) { pack in
                        amused_igemm_u8s8(
                            m, c.count, k, q.assumingMemoryBound(to: UInt8.self), rowLength, w, k, rowScale, rowZero,
                            colScale, b, out, ldy, UnsafeMutableRawPointer(pack).assumingMemoryBound(to: Int8.self))
                    }
                case .avx2:
                    withScratch(16 * ((k + 1) / 2)) { pack in
                        amused_igemm_u16s8_avx2(
                            m, c.count, k, q.assumingMemoryBound(to: UInt16.self), rowLength, w, k, rowScale, rowZero,
                            colScale, b, out, ldy, UnsafeMutableRawPointer(pack).assumingMemoryBound(to: Int16.self))
                    }
                case .portable, .widened:
                    amused_igemm_u8s8_portable(
                        m, c.count, k, q.assumingMemoryBound(to: UInt8.self), rowLength, w, k, rowScale, rowZero,
                        colScale, b, out, ldy)
                }
            }
        }
    }
}
