// Backward passes of the kernels the transformer uses, for LoRA training: each takes what its forward read (not what
// it wrote) and the gradient of its output, and returns the gradient of its input. Norm statistics and attention
// probabilities are recomputed rather than stored, so a training step keeps only the layer inputs.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Kernels {
    /// ∂L/∂x of `rmsNorm` (y = x · r · g, r = (mean(x²) + eps)^-½): r·(g⊙dy) − x·r³·mean(x⊙g⊙dy).
    public static func rmsNormBackward(
        x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dim: Int,
        eps: Float, weight: UnsafePointer<Float>?, dx: UnsafeMutablePointer<Float>
    ) {
        let out = SharedPointer(dx)
        let xs = UncheckedSendable(x), dys = UncheckedSendable(dy), ws = UncheckedSendable(weight)
        Parallel.chunks(rows, cost: dim * 6) { range in
            for r in range {
                let xr = xs.value + r * dim, gr = dys.value + r * dim, o = out.p + r * dim
                var squares: Float = 0, dot: Float = 0
                for i in 0..<dim {
                    squares += xr[i] * xr[i]
                    dot += xr[i] * gr[i] * (ws.value?[i] ?? 1)
                }
                let inv = 1 / (squares / Float(dim) + eps).squareRoot()
                let k = inv * inv * inv * dot / Float(dim)
                for i in 0..<dim { o[i] = inv * gr[i] * (ws.value?[i] ?? 1) - xr[i] * k }
            }
        }
    }

    /// ∂L/∂x of `layerNorm` (biased variance): r·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)) with ĝ = g⊙dy, x̂ = (x − μ)·r.
    public static func layerNormBackward(
        x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dim: Int,
        eps: Float, weight: UnsafePointer<Float>?, dx: UnsafeMutablePointer<Float>
    ) {
        let out = SharedPointer(dx)
        let xs = UncheckedSendable(x), dys = UncheckedSendable(dy), ws = UncheckedSendable(weight)
        Parallel.chunks(rows, cost: dim * 8) { range in
            for r in range {
                let xr = xs.value + r * dim, gr = dys.value + r * dim, o = out.p + r * dim
                var mean: Float = 0
                for i in 0..<dim { mean += xr[i] }
                mean /= Float(dim)
                var variance: Float = 0
                for i in 0..<dim { variance += (xr[i] - mean) * (xr[i] - mean) }
                let inv = 1 / (variance / Float(dim) + eps).squareRoot()
                var meanG: Float = 0, meanGX: Float = 0
                for i in 0..<dim {
                    let g = gr[i] * (ws.value?[i] ?? 1)
                    meanG += g
                    meanGX += g * (xr[i] - mean) * inv
                }
                meanG /= Float(dim)
                meanGX /= Float(dim)
                for i in 0..<dim {
                    let g = gr[i] * (ws.value?[i] ?? 1)
                    o[i] = inv * (g - meanG - (xr[i] - mean) * inv * meanGX)
                }
            }
        }
    }

    /// The derivative of exact GELU at `x`: Φ(x) + x·φ(x).
    @inline(__always)
    public static func geluDerivative(_ x: Float) -> Float {
        0.5 * (1 + erff(x * 0.70710678118654752)) + x * expf(-0.5 * x * x) * 0.3989422804014327
    }

    /// `dy[i] *= gelu′(x[i])`, in place: the gradient through exact GELU given its input.
    public static func geluBackward(x: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, count: Int) {
        let out = SharedPointer(dy), xs = UncheckedSendable(x)
        let blocks = (count + 1023) / 1024
        Parallel.chunks(blocks, cost: 1024 * 30) { range in
            let lo = range.lowerBound * 1024, hi = min(count, range.upperBound * 1024)
            var i = lo
            while i + 8 <= hi {
                let v = UnsafeRawPointer(xs.value + i).loadUnaligned(as: FastMath.V.self)
                let g = UnsafeRawPointer(out.p + i).loadUnaligned(as: FastMath.V.self)
                UnsafeMutableRawPointer(out.p + i).storeBytes(of: g * FastMath.geluDerivative(v), as: FastMath.V.self)
                i += 8
            }
            while i < hi {
                out.p[i] *= geluDerivative(xs.value[i])
                i += 1
            }
        }
    }

    /// GEGLU's backward pass: the forward read `projected` [rows, 2·inner] (the linear half, then the gate) and
    /// wrote a ⊙ gelu(gate); writes d(linear half) = dy ⊙ gelu(gate) and d(gate) = dy ⊙ a ⊙ gelu′(gate).
    public static func gegluBackward(
        projected: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, inner: Int,
        dProjected: UnsafeMutablePointer<Float>
    ) {
        let out = SharedPointer(dProjected), ps = UncheckedSendable(projected), gs = UncheckedSendable(dy)
        Parallel.chunks(rows, cost: inner * 60) { range in
            for r in range {
                let a = ps.value + r * 2 * inner, gate = a + inner, g = gs.value + r * inner
                let da = out.p + r * 2 * inner, dgate = da + inner
                var i = 0
                while i + 8 <= inner {
                    let x = UnsafeRawPointer(gate + i).loadUnaligned(as: FastMath.V.self)
                    let av = UnsafeRawPointer(a + i).loadUnaligned(as: FastMath.V.self)
                    let gv = UnsafeRawPointer(g + i).loadUnaligned(as: FastMath.V.self)
                    UnsafeMutableRawPointer(da + i).storeBytes(of: gv * FastMath.gelu(x), as: FastMath.V.self)
                    UnsafeMutableRawPointer(dgate + i).storeBytes(
                        of: gv * av * FastMath.geluDerivative(x),
                        as: FastMath.V.self)
                    i += 8
                }
                while i < inner {
                    var lane = FastMath.V(repeating: 0)
                    lane[0] = gate[i]
                    da[i] = g[i] * FastMath.gelu(lane)[0]
                    dgate[i] = g[i] * a[i] * FastMath.geluDerivative(lane)[0]
                    i += 1
                }
            }
        }
    }

    /// `dy[i] *= quick_gelu′(x[i])`, in place: d/dx x·σ(1.702x) = σ + 1.702·x·σ·(1 − σ).
    public static func quickGeluBackward(x: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, count: Int) {
        let out = SharedPointer(dy), xs = UncheckedSendable(x)
        Parallel.chunks(count, cost: 30) { range in
            for i in range {
                let v = xs.value[i], s = 1 / (1 + expf(-1.702 * v))
                out.p[i] *= s + 1.702 * v * s * (1 - s)
            }
        }
    }

    /// The derivative of SiLU at `x`: σ(x)·(1 + x·(1 − σ(x))).
    @inline(__always)
    public static func siluDerivative(_ x: Float) -> Float {
        let s = 1 / (1 + expf(-x))
        return s * (1 + x * (1 - s))
    }

    /// The gradients of `attention` with respect to Q, K and V, given the forward's Q, K, V and the output's gradient,
    /// all [batch, tokens, heads·headDim] with row stride `inner`. The probabilities are recomputed (with the causal
    /// mask when `causal`): P = softmax(s·QKᵀ), dV = Pᵀ·dO, dS = P ⊙ (dO·Vᵀ − rowsum(P ⊙ dO·Vᵀ)), dQ = s·dS·K,
    /// dK = s·dSᵀ·Q. Masked entries have P = 0, so they get no gradient.
    public static func attentionBackward(
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        dOut: UnsafePointer<Float>, batch: Int, queries: Int, keys: Int, heads: Int,
        headDim: Int, causal: Bool = false, dQ: UnsafeMutablePointer<Float>,
        dK: UnsafeMutablePointer<Float>, dV: UnsafeMutablePointer<Float>
    ) {
        let inner = heads * headDim, scale = 1 / Float(headDim).squareRoot()
        let qs = UncheckedSendable(q), ks = UncheckedSendable(k), vs = UncheckedSendable(v),
            gs = UncheckedSendable(dOut)
        let dq = SharedPointer(dQ), dk = SharedPointer(dK), dv = SharedPointer(dV)
        Parallel.chunks(batch * heads, cost: queries * keys * headDim * 4) { range in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: queries * keys)
            let dp = UnsafeMutablePointer<Float>.allocate(capacity: queries * keys)
            defer {
                p.deallocate()
                dp.deallocate()
            }
            for pair in range {
                let b = pair / heads, hd = pair % heads
                let qo = b * queries * inner + hd * headDim, ko = b * keys * inner + hd * headDim
                gemmCall(
                    m: queries, n: keys, k: headDim, a: qs.value + qo, lda: inner, b: ks.value + ko, ldb: inner,
                    transposeB: true, transposeA: false, c: p, ldc: keys, alpha: scale, beta: 0)
                if causal {
                    for i in 0..<queries where i + 1 < keys {
                        (p + i * keys + i + 1).update(repeating: -.infinity, count: keys - i - 1)
                    }
                }
                for i in 0..<queries { softmaxRow(p + i * keys, keys) }
                // dV = Pᵀ · dO
                gemmCall(
                    m: keys, n: headDim, k: queries, a: p, lda: keys, b: gs.value + qo, ldb: inner,
                    transposeB: false, transposeA: true, c: dv.p + ko, ldc: inner, alpha: 1, beta: 0)
                // dP = dO · Vᵀ, then dS in place
                gemmCall(
                    m: queries, n: keys, k: headDim, a: gs.value + qo, lda: inner, b: vs.value + ko, ldb: inner,
                    transposeB: true, transposeA: false, c: dp, ldc: keys, alpha: 1, beta: 0)
                for i in 0..<queries {
                    let pr = p + i * keys, dr = dp + i * keys
                    var dot: Float = 0
                    for j in 0..<keys { dot += pr[j] * dr[j] }
                    for j in 0..<keys { dr[j] = pr[j] * (dr[j] - dot) }
                }
                gemmCall(
                    m: queries, n: headDim, k: keys, a: dp, lda: keys, b: ks.value + ko, ldb: inner,
                    transposeB: false, transposeA: false, c: dq.p + qo, ldc: inner, alpha: scale, beta: 0)
                gemmCall(
                    m: keys, n: headDim, k: queries, a: dp, lda: keys, b: qs.value + qo, ldb: inner,
                    transposeB: false, transposeA: true, c: dk.p + ko, ldc: inner, alpha: scale, beta: 0)
            }
        }
    }

    /// ∂L/∂input of `depthwiseConv3x3NHWC` (padding 1): each input pixel collects the output gradients of the nine
    /// pixels it fed, through the mirrored taps.
    public static func depthwiseConv3x3BackwardNHWC(
        dy: UnsafePointer<Float>, batch: Int, height h: Int, width w: Int,
        channels c: Int, weight: UnsafePointer<Float>,
        dx: UnsafeMutablePointer<Float>
    ) {
        var taps = [Float](repeating: 0, count: 9 * c)
        for ch in 0..<c { for t in 0..<9 { taps[t * c + ch] = weight[ch * 9 + t] } }
        let out = SharedPointer(dx), gs = UncheckedSendable(dy)
        taps.withUnsafeBufferPointer { tapBuffer in
            let tp = UncheckedSendable(tapBuffer.baseAddress!)
            Parallel.chunks(batch * h, cost: w * c * 9) { range in
                for row in range {
                    let b = row / h, y = row % h
                    for x in 0..<w {
                        let dst = out.p + ((b * h + y) * w + x) * c
                        dst.update(repeating: 0, count: c)
                        // Output (oy, ox) read input (oy + ky − 1, ox + kx − 1): this pixel fed oy = y − ky + 1.
                        for ky in 0..<3 {
                            let oy = y - ky + 1
                            if oy < 0 || oy >= h { continue }
                            for kx in 0..<3 {
                                let ox = x - kx + 1
                                if ox < 0 || ox >= w { continue }
                                let src = gs.value + ((b * h + oy) * w + ox) * c
                                let wt = tp.value + (ky * 3 + kx) * c
                                for ch in 0..<c { dst[ch] += src[ch] * wt[ch] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// ∂L/∂input of `convTranspose2x2Stride2NHWC`: gathers each input pixel's four output gradients into
    /// [pixel, (cout, ky, kx)] and multiplies by the weight [cin, (cout, ky, kx)] transposed.
    public static func convTranspose2x2Stride2BackwardNHWC(
        dy: UnsafePointer<Float>, batch: Int, height h: Int,
        width w: Int, channels cin: Int,
        weight: UnsafePointer<Float>, outChannels cout: Int,
        dx: UnsafeMutablePointer<Float>
    ) {
        let m = batch * h * w, n = cout * 4
        let gathered = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        defer { gathered.deallocate() }
        for b in 0..<batch {
            for y in 0..<h {
                for x in 0..<w {
                    let dst = gathered + ((b * h + y) * w + x) * n
                    for ky in 0..<2 {
                        for kx in 0..<2 {
                            let src = dy + ((b * 2 * h + 2 * y + ky) * 2 * w + 2 * x + kx) * cout
                            for c in 0..<cout { dst[c * 4 + ky * 2 + kx] = src[c] }
                        }
                    }
                }
            }
        }
        sgemm(m: m, n: cin, k: n, a: gathered, lda: n, b: weight, ldb: n, transposeB: true, c: dx, ldc: cin)
    }

    /// Mean cross-entropy over the rows whose label is not `ignoreIndex` (torch's `F.cross_entropy(…,
    /// ignore_index=-100, reduction="mean")`), and its gradient with respect to `logits` written to `dLogits`
    /// (zero on ignored rows). Returns the loss and the number of rows counted. Every other label must be in
    /// 0..<classes (the caller validates them).
    public static func softmaxCrossEntropy(
        logits: UnsafePointer<Float>, labels: UnsafePointer<Int64>, rows: Int,
        classes: Int, ignoreIndex: Int64 = -100,
        dLogits: UnsafeMutablePointer<Float>
    ) -> (loss: Float, counted: Int) {
        var counted = 0
        for r in 0..<rows where labels[r] != ignoreIndex { counted += 1 }
        dLogits.update(repeating: 0, count: rows * classes)
        guard counted > 0 else { return (0, 0) }
        var total: Double = 0
        for r in 0..<rows where labels[r] != ignoreIndex {
            precondition(labels[r] >= 0 && labels[r] < classes, "label \(labels[r]) outside 0..<\(classes)")
            let row = logits + r * classes, g = dLogits + r * classes
            var maxValue = -Float.infinity
            for j in 0..<classes where row[j] > maxValue { maxValue = row[j] }
            var sum: Double = 0
            for j in 0..<classes {
                let e = expf(row[j] - maxValue)
                g[j] = e
                sum += Double(e)
            }
            let label = Int(labels[r])
            total += log(sum) - Double(row[label] - maxValue)
            let inv = Float(1 / (sum * Double(counted)))
            for j in 0..<classes { g[j] *= inv }
            g[label] -= 1 / Float(counted)
        }
        return (Float(total / Double(counted)), counted)
    }
}
