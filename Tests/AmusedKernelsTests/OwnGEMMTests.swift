// AmusedKit's SGEMM (Sources/C/CGemm), both kernels the CPU has — AVX-512 and AVX2 — against the definition of a
// matrix product, over shapes that cross every blocking boundary (MR = 12 or 6 rows, NR = 32 or 16 columns, KC = 256
// depth, MC = 192, NC = 512), all four transposition cases, padded strides, and alpha/beta. Inputs are small integers, so every sum is exact in float32
// (|sum| < 2^24) whatever the order of the additions: the results must be *equal* to the integer products.
// Debug builds run the kernel unoptimised (release builds are what use it; `Kernels.ownGEMM`), which is slow, hence
// the moderate sizes.

import AmusedKernels
import CGemm
import Testing

@Suite(
    "Own SGEMM",
    .enabled(if: amused_sgemm_width() != 0, "the CPU has neither AVX-512F nor AVX2; BLAS does every product"))
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
        Case(m: 6, n: 16, k: 8, transB: true),  // one AVX2 tile, one 8-deep transpose
        Case(m: 7, n: 17, k: 9, transB: true, beta: 1),  // one past each AVX2 edge, C read back
        Case(m: 11, n: 31, k: 255, transA: true),  // one short of each edge
        Case(m: 193, n: 17, k: 70, transA: true, transB: true),  // two MC blocks
        Case(m: 192, n: 16, k: 256),  // a full MC × KC block of row-major A: packing ends at the buffer's end
        Case(m: 7, n: 515, k: 40, alpha: 2, beta: 0.5, pad: 3),  // two NC blocks, C accumulated
        Case(m: 30, n: 100, k: 600, transB: true, alpha: 0.25, beta: 1, pad: 5),  // three KC blocks add up
        Case(m: 200, n: 520, k: 9, transA: true, beta: -1, pad: 1),
        Case(m: 64, n: 64, k: 0, beta: 0.5),  // empty sum: C = β·C
    ]

    /// The kernels this CPU can run: 512 (AVX-512F) and 256 (AVX2 + FMA; AVX-512 CPUs have it too).
    static let widths: [Int32] = amused_sgemm_width() == 512 ? [512, 256] : amused_sgemm_width() == 256 ? [256] : []

    @Test(arguments: widths, cases)
    func matchesTheDefinition(_ width: Int32, _ t: Case) {
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
        let status = amused_sgemm_with(
            width, t.transA ? 1 : 0, t.transB ? 1 : 0, t.m, t.n, t.k, t.alpha, a, lda, b, ldb, t.beta,
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
        #expect(mismatches == 0, "\(mismatches) of \(t.m * t.n) entries differ from the integer product (\(width)-bit)")
    }

    @Test func aWidthWithoutAKernelIsRefused() {
        var c: [Float] = [0]
        #expect(amused_sgemm_with(128, 0, 0, 1, 1, 1, 1, [1], 1, [1], 1, 0, &c, 1) == -1)
        #expect(c == [0])
    }

    @Test func theEnvironmentChoosesTheKernel() {
        #expect(Kernels.gemmWidth(environment: "blas") == 0)
        #expect(Kernels.gemmWidth(environment: "own") == amused_sgemm_width())
        #expect(Kernels.gemmWidth(environment: "avx2") == 256)
        #expect(Kernels.gemmWidth(environment: nil) == (amused_sgemm_available() == 1 ? 512 : 0))
    }
}

/// The measured peak rates that benchmarks divide by (`Sources/C/CGemm/peak.c`, assembly loops): no round asked for
/// means no loop run (the loop counts down to zero and would otherwise run 2^64 rounds), and a measurement leaves the
/// registers the compiler relies on intact — values computed across it, and the kernel's products after it, are exact.
@Suite("Peak rates")
struct PeakRateTests {
    @Test func noRoundsMeasureNothing() {
        #expect(amused_fma_peak_gflops(0) == 0)
        #expect(amused_fma_peak_gflops(-1) == 0)
        #expect(amused_int16_peak_gops(0) == 0)
        #expect(amused_int16_peak_gops(-5) == 0)
    }

    @Test func aMeasurementIsPositiveAndDisturbsNothing() {
        let x: [Float] = (0..<40).map { Float($0 % 7) - 3 }
        let before = x.reduce(0, +)
        let fma = amused_fma_peak_gflops(1_000_000), int16 = amused_int16_peak_gops(1_000_000)
        #expect(x.reduce(0, +) == before)
        if amused_sgemm_width() != 0 { #expect(fma > 0 && fma.isFinite) } else { #expect(fma == 0) }
        if amused_igemm_avx2_cpu_supported() == 1 { #expect(int16 > 0 && int16.isFinite) } else { #expect(int16 == 0) }
        // x (2×3) · Wᵀ, W 4×3, small integers: exact, as BLASTests checks it.
        var y = [Float](repeating: -1, count: 8)
        Kernels.sgemm(
            m: 2, n: 4, k: 3, a: [1, 2, 3, 4, 5, 6], lda: 3, b: [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1], ldb: 3,
            transposeB: true, c: &y, ldc: 4)
        #expect(y == [1, 2, 3, 6, 4, 5, 6, 15])
    }
}
