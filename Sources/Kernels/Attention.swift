// Multi-head scaled dot-product attention over row-major [batch, tokens, heads·headDim] projections.

extension Kernels {
    /// softmax(Q·Kᵀ·scale [+ causal mask]) · V for every batch item and head, written to `output`
    /// ([batch, queries, heads·headDim]). `q`, `k`, `v` may be views into wider rows (`qStride` etc. are row strides).
    /// With `causal`, query i attends to keys 0...i only (CLIP's text mask).
    public static func attention(q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>, kStride: Int,
                                 v: UnsafePointer<Float>, vStride: Int, batch: Int, queries: Int, keys: Int,
                                 heads: Int, headDim: Int, causal: Bool = false,
                                 output: UnsafeMutablePointer<Float>, outStride: Int) {
        let scale = 1 / Float(headDim).squareRoot()
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: queries * keys)
        defer { scores.deallocate() }
        for b in 0..<batch {
            for hd in 0..<heads {
                let qb = q + b * queries * qStride + hd * headDim
                let kb = k + b * keys * kStride + hd * headDim
                let vb = v + b * keys * vStride + hd * headDim
                sgemm(m: queries, n: keys, k: headDim, a: qb, lda: qStride, b: kb, ldb: kStride, transposeB: true,
                      c: scores, ldc: keys, alpha: scale)
                if causal {
                    for i in 0..<queries where i + 1 < keys {
                        (scores + i * keys + i + 1).update(repeating: -.infinity, count: keys - i - 1)
                    }
                }
                softmax(scores, rows: queries, dim: keys)
                sgemm(m: queries, n: headDim, k: keys, a: scores, lda: keys, b: vb, ldb: vStride, transposeB: false,
                      c: output + b * queries * outStride + hd * headDim, ldc: outStride)
            }
        }
    }
}
