// The BLAS door computes what a matrix product is, with and without a transposed right operand.

import AmusedKernels
import Testing

@Suite("BLAS")
struct BLASTests {
    @Test func sgemmWithTransposedWeight() {
        // x (2×3) · Wᵀ where W is 4×3 (a Linear weight): exact in float32, small integers.
        let x: [Float] = [1, 2, 3, 4, 5, 6]
        let w: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]
        var y = [Float](repeating: -1, count: 8)
        Kernels.sgemm(m: 2, n: 4, k: 3, a: x, lda: 3, b: w, ldb: 3, transposeB: true, c: &y, ldc: 4)
        #expect(y == [1, 2, 3, 6, 4, 5, 6, 15])
        var z = [Float](repeating: 0, count: 4)
        Kernels.sgemm(m: 2, n: 2, k: 3, a: x, lda: 3, b: [1, 0, 0, 1, 1, 1], ldb: 2, transposeB: false, c: &z, ldc: 2)
        #expect(z == [4, 5, 10, 11])
    }
}

@Suite("Transpose")
struct TransposeTests {
    /// Tiles of 32 over shapes that are not multiples of it, two matrices at once: every element lands where the
    /// definition puts it (a copy, so exact).
    @Test(arguments: [(1, 1), (33, 70), (300, 7), (64, 1000)])
    func matchesTheDefinition(_ shape: (Int, Int)) {
        let (rows, columns) = shape, batch = 2
        let x = (0..<(batch * rows * columns)).map { Float($0) }
        var y = [Float](repeating: -1, count: x.count)
        Kernels.transpose(x, rows: rows, columns: columns, batch: batch, into: &y)
        var wrong = 0
        for b in 0..<batch {
            for r in 0..<rows {
                for c in 0..<columns
                where y[b * rows * columns + c * rows + r] != x[b * rows * columns + r * columns + c] {
                    wrong += 1
                }
            }
        }
        #expect(wrong == 0)
    }
}
