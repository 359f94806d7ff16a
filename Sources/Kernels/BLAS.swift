// The one door to matrix products: AmusedKit's SGEMM (Sources/C/CGemm: AVX-512, or AVX2 on request) where it runs,
// else BLAS — OpenBLAS on Linux, Accelerate on Apple platforms. Everything else calls these.

import CGemm

#if canImport(Accelerate)
import Accelerate
#else
import COpenBLAS
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Matrix kernels over row-major float32 buffers.
public enum Kernels {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major; `transposeB` treats B as stored n×k (a PyTorch
    /// Linear weight), so `x · Wᵀ` needs no copy; `transposeA` treats A as stored k×m.
    ///
    /// Large products are split into column blocks (or row blocks when M is larger), one per core, each computed by
    /// a single-threaded call (`ownGEMM` or BLAS): BLAS's own threads would spin between calls while the element-wise
    /// kernels need the same cores.
    public static func sgemm(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, transposeB: Bool, transposeA: Bool = false,
        c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float = 1, beta: Float = 0
    ) {
        let pieces = Parallel.width
        if pieces > 1 && m * n * k >= 1 << 22 && max(m, n) >= 64 * pieces {
            let out = SharedPointer(c)
            let aa = UncheckedSendable(a), bb = UncheckedSendable(b)
            if n >= m {
                // Column block [n0, n1): B's rows (transposed) or columns (not transposed) for that block.
                Parallel.chunks(pieces, cost: 1 << 20) { range in
                    for i in range {
                        let n0 = (n * i / pieces) & ~15, n1 = i == pieces - 1 ? n : (n * (i + 1) / pieces) & ~15
                        guard n1 > n0 else { continue }
                        let bBlock = transposeB ? bb.value + n0 * ldb : bb.value + n0
                        gemmCall(
                            m: m, n: n1 - n0, k: k, a: aa.value, lda: lda, b: bBlock, ldb: ldb,
                            transposeB: transposeB, transposeA: transposeA, c: out.p + n0, ldc: ldc,
                            alpha: alpha, beta: beta)
                    }
                }
            } else {
                Parallel.chunks(pieces, cost: 1 << 20) { range in
                    for i in range {
                        let m0 = m * i / pieces, m1 = m * (i + 1) / pieces
                        guard m1 > m0 else { continue }
                        let aBlock = transposeA ? aa.value + m0 : aa.value + m0 * lda
                        gemmCall(
                            m: m1 - m0, n: n, k: k, a: aBlock, lda: lda, b: bb.value, ldb: ldb,
                            transposeB: transposeB, transposeA: transposeA, c: out.p + m0 * ldc, ldc: ldc,
                            alpha: alpha, beta: beta)
                    }
                }
            }
            return
        }
        gemmCall(
            m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, transposeB: transposeB, transposeA: transposeA,
            c: c, ldc: ldc, alpha: alpha, beta: beta)
    }

    /// One single-threaded product: AmusedKit's SGEMM (of `gemmWidth`) when `ownGEMM`, BLAS otherwise (or if the
    /// kernel could not allocate its packing buffers).
    @inline(__always)
    static func gemmCall(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        transposeB: Bool, transposeA: Bool, c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float,
        beta: Float
    ) {
        // Here, not only in `sgemm`: attention calls this directly, and with every linear layer computing in int8 it
        // can be a process's first product — OpenBLAS's own threads then spun beside ours (an int8 forward on a
        // Zen 3 took twice as long).
        _ = singleThreadedBLAS
        if ownGEMM
            && amused_sgemm_with(
                gemmWidth, transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc) == 0
        {
            return
        }
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            blasInt(m), blasInt(n), blasInt(k), alpha, a, blasInt(lda), b, blasInt(ldb), beta, c, blasInt(ldc))
    }

    /// Whether products use AmusedKit's own SGEMM (`Sources/C/CGemm`) rather than BLAS.
    public static var ownGEMM: Bool { gemmWidth != 0 }

    /// The register width of AmusedKit's SGEMM that does the products, 0 when BLAS does: 512 on x86-64 CPUs with
    /// AVX-512F in optimised builds, unless `AMUSED_GEMM=blas` is set; `AMUSED_GEMM=own` forces the CPU's widest
    /// kernel into debug builds too, `AMUSED_GEMM=avx2` the AVX2 one (6×16 tile; on AVX2-only CPUs it is opt-in, as
    /// in the model it measured level with OpenBLAS's AVX2 kernels on a Zen 3 and a Zen 4, not faster). Debian's
    /// OpenBLAS is pinned to its AVX2 kernels on AVX-512 machines (`OPENBLAS_CORETYPE=Haswell`), and the AVX-512
    /// kernel runs the model's shapes up to 1.6 times faster.
    public static let gemmWidth: Int32 = gemmWidth(environment: getenv("AMUSED_GEMM").map { String(cString: $0) })

    /// The choice `AMUSED_GEMM=value` makes on this CPU in this build (nil: unset).
    public static func gemmWidth(environment value: String?) -> Int32 {
        let cpu = amused_sgemm_width()
        switch value {
        case "blas"?: return 0
        // Also in a debug build (slow: the intrinsics unoptimised), so that tests can run the model through it.
        case "own"?: return cpu
        case "avx2"?: return cpu >= 256 ? 256 : 0
        default: return amused_sgemm_available() == 1 ? cpu : 0
        }
    }

    /// BLAS runs on the calling thread only; AmusedKit splits the work itself (set once, on first use).
    static let singleThreadedBLAS: Void = {
        #if !canImport(Accelerate)
        openblas_set_num_threads(1)
        #endif
    }()

    /// Which library does the products (and the BLAS build behind it), for `amused version` and benchmark reports.
    public static var blasDescription: String {
        #if canImport(Accelerate)
        let blas = "Accelerate"
        #else
        let blas = String(cString: openblas_get_config())
        #endif
        let products =
            switch gemmWidth {
            case 512: "AmusedKit AVX-512 SGEMM (set AMUSED_GEMM=blas for \(blas))"
            case 256: "AmusedKit AVX2 SGEMM (AMUSED_GEMM=avx2; unset for \(blas))"
            default: blas
            }
        let int8: String =
            switch int8Compute {
            case .vnni: "int8 weights: int8 × int8 → int32 (AVX-512 VNNI; AMUSED_COMPUTE=f32 widens)"
            case .avx2: "int8 weights: int8 × int8 → int32 (AVX2, 16-bit pairs; AMUSED_COMPUTE=f32 widens)"
            case .portable: "int8 weights: int8 × int8 → int32 (portable C, AMUSED_COMPUTE=int8)"
            case .widened: "int8 weights: widened to float32"
            }
        let bf16 =
            bf16Compute
            ? "bf16 weights: bf16 × bf16 → f32 (AVX512_BF16; AMUSED_COMPUTE=f32 widens)"
            : "bf16 weights: widened to float32"
        return products + ", single-threaded calls split over \(Parallel.width) cores; " + int8 + "; " + bf16
    }

    #if canImport(Accelerate)
    @inline(__always) static func blasInt(_ x: Int) -> Int32 { Int32(x) }
    #else
    @inline(__always) static func blasInt(_ x: Int) -> blasint { blasint(x) }
    #endif
}
