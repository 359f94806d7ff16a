// The one door to BLAS: OpenBLAS on Linux, Accelerate on Apple platforms. Everything else calls these.

#if canImport(Accelerate)
import Accelerate
#else
import COpenBLAS
#endif

/// Matrix kernels over row-major float32 buffers.
public enum Kernels {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major; `transposeB` treats B as stored n×k (a PyTorch
    /// Linear weight), so `x · Wᵀ` needs no copy; `transposeA` treats A as stored k×m.
    public static func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int, transposeB: Bool, transposeA: Bool = false,
                             c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float = 1, beta: Float = 0) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    blasInt(m), blasInt(n), blasInt(k), alpha, a, blasInt(lda), b, blasInt(ldb), beta, c, blasInt(ldc))
    }

    /// The BLAS library in use and how it was built, for `amused version` and benchmark reports.
    public static var blasDescription: String {
        #if canImport(Accelerate)
        return "Accelerate"
        #else
        return String(cString: openblas_get_config()) + ", \(openblas_get_num_threads()) threads"
        #endif
    }

    #if canImport(Accelerate)
    @inline(__always) static func blasInt(_ x: Int) -> Int32 { Int32(x) }
    #else
    @inline(__always) static func blasInt(_ x: Int) -> blasint { blasint(x) }
    #endif
}
