// AmusedKit's AVX-512 SGEMM (Sources/C/CGemm) against the definition of a matrix product, over shapes that cross
// every blocking boundary of the kernel (MR = 12 rows, NR = 32 columns, KC = 256 depth, MC = 192, NC = 512), all four
// transposition cases, padded strides, and alpha/beta. Inputs are small integers, so every sum is exact in float32
// (|sum| < 2^24) whatever the order of the additions: the results must be *equal* to the integer products.
// Debug builds run the kernel unoptimised (release builds are what use it; `Kernels.ownGEMM`), which is slow, hence
// the moderate sizes.

import CGemm
import Testing

@Suite("Own SGEMM", .enabled(if: amused_sgemm_cpu_supported() == 1, "the CPU has no AVX-512F; BLAS does every product"))
struct OwnGEMMTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var m: Int, n: Int, k: Int, transA = false, transB = false, alpha: Float = 1, beta: Float = 0, pad = 0
        var testDescription: String {
            "\(m)×\(n)×\(k) \(transA ? "Aᵀ" : "A")·\(transB ? "Bᵀ" : "B") α=\(alpha) β=\(beta) pad=\(pad)"
        }
    }

    static let cases: [Case] = [
        Case(m: 1, n: 1, k: 1),
        Case(m: 12, n: 32, k: 256, transB: true),  // exactly one register tile, one panel
        Case(m: 13, n: 33, k: 257, transB: true),  // one past each edge
        Case(m: 11, n: 31, k: 255, transA: true),  // one short of each edge
        Case(m: 193, n: 17, k: 70, transA: true, transB: true),  // two MC blocks
        Case(m: 7, n: 515, k: 40, alpha: 2, beta: 0.5, pad: 3),  // two NC blocks, C accumulated
        Case(m: 30, n: 100, k: 600, transB: true, alpha: 0.25, beta: 1, pad: 5),  // three KC blocks add up
        Case(m: 200, n: 520, k: 9, transA: true, beta: -1, pad: 1),
        Case(m: 64, n: 64, k: 0, beta: 0.5),  // empty sum: C = β·C
    ]

    @Test(arguments: cases)
    func matchesTheDefinition(_ t: Case) {
        // op(A) is m×k; A is stored m×k (or k×m when transposed) with `pad` extra columns per row, B likewise.
        let aRows = t.transA ? t.k : t.m, aCols = t.transA ? t.m : t.k, lda = aCols + t.pad
        let bRows = t.transB ? t.n : t.k, bCols = t.transB ? t.k : t.n, ldb = bCols + t.pad
        let ldc = t.n + t.pad
        let a = (0..<aRows * lda).map { Float(($0 * 7 + 3) % 9 - 4) }
        let b = (0..<bRows * ldb).map { Float(($0 * 5 + 1) % 7 - 3) }
        let c0 = (0..<t.m * ldc).map { Float(($0 * 3) % 11 - 5) }
        var c = c0
        if t.beta == 0 {  // with β = 0, C must not be read: fill it with NaN
            c = [Float](repeating: .nan, count: c0.count)
        }
        let status = amused_sgemm(
            t.transA ? 1 : 0, t.transB ? 1 : 0, t.m, t.n, t.k, t.alpha, a, lda, b, ldb, t.beta,
            &c, ldc)
        #expect(status == 0)
        var mismatches = 0
        for i in 0..<t.m {
            for j in 0..<ldc {
                let got = c[i * ldc + j]
                guard j < t.n else {  // the padding of C's rows is never written
                    #expect(got.bitPattern == (t.beta == 0 ? Float.nan : c0[i * ldc + j]).bitPattern)
                    continue
                }
                var sum = 0
                for p in 0..<t.k {
                    let x = t.transA ? a[p * lda + i] : a[i * lda + p]
                    let y = t.transB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Int(x) * Int(y)
                }
                let want = t.alpha * Float(sum) + (t.beta == 0 ? 0 : t.beta * c0[i * ldc + j])
                if got != want { mismatches += 1 }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(t.m * t.n) entries differ from the integer product")
    }
}
