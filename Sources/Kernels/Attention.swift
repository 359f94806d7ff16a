// Multi-head scaled dot-product attention over row-major [batch, tokens, heads·headDim] projections.

extension Kernels {
    /// softmax(Q·Kᵀ·scale [+ causal mask]) · V for every batch item and head, written to `output`
    /// ([batch, queries, heads·headDim]). `q`, `k`, `v` may be views into wider rows (`qStride` etc. are row strides).
    /// With `causal`, query i attends to keys 0...i only (CLIP's text mask).
    public static func attention(
        q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>, kStride: Int,
        v: UnsafePointer<Float>, vStride: Int, batch: Int, queries: Int, keys: Int,
        heads: Int, headDim: Int, causal: Bool = false,
        output: UnsafeMutablePointer<Float>, outStride: Int
    ) {
        let scale = 1 / Float(headDim).squareRoot()
        let qs = UncheckedSendable(q), ks = UncheckedSendable(k), vs = UncheckedSendable(v)
        let out = SharedPointer(output)
        // One (batch item, head) pair per task: each product is small, so the pairs run side by side on the cores
        // with single-threaded BLAS calls rather than each product being split.
        Parallel.chunks(batch * heads, cost: queries * keys * headDim) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: queries * keys)
            defer { scores.deallocate() }
            for pair in range {
                let b = pair / heads, hd = pair % heads
                let qb = qs.value + b * queries * qStride + hd * headDim
                let kb = ks.value + b * keys * kStride + hd * headDim
                let vb = vs.value + b * keys * vStride + hd * headDim
                gemmCall(
                    m: queries, n: keys, k: headDim, a: qb, lda: qStride, b: kb, ldb: kStride, transposeB: true,
                    transposeA: false, c: scores, ldc: keys, alpha: scale, beta: 0)
                if causal {
                    for i in 0..<queries where i + 1 < keys {
                        (scores + i * keys + i + 1).update(repeating: -.infinity, count: keys - i - 1)
                    }
                }
                for i in 0..<queries { softmaxRow(scores + i * keys, keys) }
                gemmCall(
                    m: queries, n: headDim, k: keys, a: scores, lda: keys, b: vb, ldb: vStride, transposeB: false,
                    transposeA: false, c: out.p + b * queries * outStride + hd * headDim, ldc: outStride,
                    alpha: 1, beta: 0)
            }
        }
    }
}
