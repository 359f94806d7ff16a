// The masked-token-modelling loss of train_amused.py and its gradient with respect to LoRA adapters on the
// transformer's to_q/to_k/to_v, by hand-written backward passes.
//
// The forward below is the inference forward of UVit2DModel.swift, step for step, with LoRA added to the targeted
// Linears (PEFT: y = W·x + s·B·(A·x)) and with each layer's inputs kept for the backward pass. The text side — the
// projected text, the cross-attention contexts, the conditioning vector and every AdaLN modulation — carries no
// adapter; its gradients are computed only when the text encoder is trained (`textGradients`). The gradient flows
// from the loss back to the first adapter, down_block.attention_blocks.0: the embedding, its 1×1 conv, the
// downsampling and the first down res block's input lie before every adapter, so nothing is propagated through them.
// Memory: every layer input of one step is kept (full-size amused-256 at batch 1: 2.9 GB peak with the mapped
// weights); norm statistics and attention probabilities are recomputed in the backward pass, not stored.

import AmusedKernels

/// One masked-token-modelling batch: what train_amused.py feeds its transformer in a training step.
public struct MaskedTokenBatch: Sendable {
    /// Batch size.
    public var batch: Int
    /// Token grid height.
    public var height: Int
    /// Token grid width.
    public var width: Int
    /// Input ids [batch, h, w]: the image tokens with the masked positions set to the mask id.
    public var inputIds: [Int64]
    /// Labels [batch, h·w]: the image token at masked positions, −100 (ignored) elsewhere.
    public var labels: [Int64]
    /// CLIP's penultimate hidden states [batch, L, encoder_hidden_size].
    public var encoderHiddenStates: [Float]
    /// CLIP's pooled, projected text embedding [batch, cond_embed_dim].
    public var pooledTextEmb: [Float]
    /// Micro-conditioning [batch, 5]: width, height, crop top, crop left, aesthetic score.
    public var microConds: [Float]

    /// A batch from its parts (shapes are checked by the loss).
    public init(
        batch: Int, height: Int, width: Int, inputIds: [Int64], labels: [Int64], encoderHiddenStates: [Float],
        pooledTextEmb: [Float], microConds: [Float]
    ) {
        self.batch = batch
        self.height = height
        self.width = width
        self.inputIds = inputIds
        self.labels = labels
        self.encoderHiddenStates = encoderHiddenStates
        self.pooledTextEmb = pooledTextEmb
        self.microConds = microConds
    }
}

/// What one training forward and backward produced.
public struct MaskedTokenGradients: Sendable {
    /// The loss.
    public let loss: Float
    /// ∂L/∂A, ∂L/∂B of every adapter (nil when only the loss was asked for).
    public let lora: LoRAGradients?
    /// ∂L/∂encoder_hidden_states [batch, L, encoder_hidden_size], when asked for (to train the text encoder).
    public let encoderHiddenStates: [Float]?
    /// ∂L/∂pooled_text_emb [batch, cond_embed_dim], when asked for.
    public let pooledTextEmb: [Float]?
}

extension UVit2DModel {
    /// train_amused.py's loss — cross-entropy of the logits at the labelled (masked) positions, mean over them — with
    /// `lora` applied, and (when `gradients`) its gradient with respect to every adapter's A and B.
    public func maskedTokenLoss(_ batch: MaskedTokenBatch, lora: LoRAAdapters, gradients: Bool = true)
        throws(ModelError) -> (loss: Float, gradients: LoRAGradients?)
    {
        let r = try train(batch, lora: lora, gradients: gradients, textGradients: false)
        return (r.loss, r.lora)
    }

    /// The loss, the adapters' gradients and, when `textGradients`, the gradients with respect to the two text
    /// inputs — what the text encoder's backward pass starts from. Those flow back through every cross-attention's
    /// keys and values (the projected text, and the UVit blocks' kv_mapper), and through every AdaLN and ConvNext
    /// modulation into the conditioning MLP to the pooled embedding.
    public func train(_ batch: MaskedTokenBatch, lora: LoRAAdapters, gradients: Bool = true, textGradients: Bool)
        throws(ModelError) -> MaskedTokenGradients
    {
        let c = config, n = batch.batch, (h, w) = (batch.height, batch.width)
        guard batch.labels.count == n * h * w else {
            throw .invalidInput("\(batch.labels.count) labels for batch \(n) of \(h)×\(w)")
        }
        if let bad = batch.labels.first(where: { $0 != -100 && ($0 < 0 || $0 >= Int64(c.codebookSize)) }) {
            throw .invalidInput("label \(bad) is neither −100 (ignored) nor a code below \(c.codebookSize)")
        }
        guard lora.component == "transformer",
            lora.adapters.map(\.module) == (try LoRAAdapters.targets(c)).map(\.module),
            lora.adapters.allSatisfy({
                $0.a.count == lora.rank * $0.inFeatures && $0.b.count == $0.outFeatures * lora.rank
            })
        else {
            throw .invalidInput(
                "the adapters were made for a different transformer config (or A/B have the wrong size)")
        }
        guard c.downsample == c.upsample else {
            throw .invalidConfig("training needs downsample == upsample (the logits must cover the token grid)")
        }
        let cond = try conditioning(
            encoderHiddenStates: batch.encoderHiddenStates, pooledTextEmb: batch.pooledTextEmb,
            microConds: batch.microConds, batch: n, trace: nil, keysAndValues: false)
        guard batch.inputIds.count == n * h * w else {
            throw .invalidInput("\(batch.inputIds.count) ids for batch \(n) of \(h)×\(w)")
        }
        if let bad = batch.inputIds.first(where: { $0 < 0 || $0 >= Int64(c.vocabSize) }) {
            throw .invalidInput("token id \(bad) is outside the vocabulary of \(c.vocabSize)")
        }
        if c.downsample && (h % 2 != 0 || w % 2 != 0) { throw .invalidInput("downsampling needs an even token grid") }
        let run = LoRARun(lora, inputGradients: textGradients)
        let length = cond.textLength

        // The adapter-free text side: the projected text, and each UVit block's context (kv_mapper(SiLU(e)) or e).
        let e0 = encoderProj(batch.encoderHiddenStates, rows: n * length)
        var e = e0
        encoderProjNorm(&e)
        func contexts(_ block: UVitBlock) -> [[Float]] {
            block.attentionBlocks.map { b in b.kvMapper.map { $0(Ops.silu(e), rows: n * length) } ?? e }
        }
        let downContexts = contexts(downBlock), upContexts = contexts(upBlock)

        // Embedding → RMSNorm → 1×1 conv (no adapters before the first attention block: no gradient kept).
        var x = [Float](repeating: 0, count: batch.inputIds.count * c.inChannels)
        x.withUnsafeMutableBufferPointer { xp in
            for (i, id) in batch.inputIds.enumerated() {
                embeddings.rows(Int(id)..<(Int(id) + 1), into: xp.baseAddress! + i * c.inChannels)
            }
        }
        embedNorm(&x)
        x = embedConv(x, rows: batch.inputIds.count)

        var (gh, gw) = (h, w)
        let down = downBlock.trainingForward(
            x, batch: n, height: &gh, width: &gw, contexts: downContexts,
            adaLN: cond.downAdaLN, textLength: length, run: run)
        x = down.output
        let tokens = gh * gw
        let toHiddenInput = x
        projectToHiddenNorm(&x)
        x = projectToHidden(x, rows: n * tokens)
        var layerCaches: [UVitTransformerLayer.Cache] = []
        for (i, layer) in layers.enumerated() {
            let (out, cache) = layer.trainingForward(
                x, batch: n, tokens: tokens, context: e, adaLN: cond.layerAdaLN[i],
                textLength: length, run: run)
            layerCaches.append(cache)
            x = out
        }
        let fromHiddenInput = x
        projectFromHiddenNorm(&x)
        x = projectFromHidden(x, rows: n * tokens)
        let up = upBlock.trainingForward(
            x, batch: n, height: &gh, width: &gw, contexts: upContexts,
            adaLN: cond.upAdaLN, textLength: length, run: run)
        x = up.output
        let rows = n * gh * gw
        let m1 = mlmConv1(x, rows: rows)
        var m = m1
        mlmNorm(&m)
        let logits = mlmConv2(m, rows: rows)
        var dLogits = [Float](repeating: 0, count: logits.count)
        let (loss, counted) = logits.withUnsafeBufferPointer { lp in
            batch.labels.withUnsafeBufferPointer { yp in
                dLogits.withUnsafeMutableBufferPointer { gp in
                    Kernels.softmaxCrossEntropy(
                        logits: lp.baseAddress!, labels: yp.baseAddress!, rows: rows,
                        classes: c.codebookSize, dLogits: gp.baseAddress!)
                }
            }
        }
        guard counted > 0 else { throw .invalidInput("no position is masked: the loss has nothing to average") }
        guard gradients || textGradients else {
            return MaskedTokenGradients(loss: loss, lora: nil, encoderHiddenStates: nil, pooledTextEmb: nil)
        }

        // Backward, in reverse order.
        // Rows with label −100 have a zero logit gradient: only the masked rows go through the largest product.
        let maskedRows = batch.labels.indices.filter { batch.labels[$0] != -100 }
        var dMasked = [Float](repeating: 0, count: maskedRows.count * c.codebookSize)
        for (k, row) in maskedRows.enumerated() {
            for j in 0..<c.codebookSize { dMasked[k * c.codebookSize + j] = dLogits[row * c.codebookSize + j] }
        }
        let gMasked = mlmConv2.backwardInput(dMasked, rows: maskedRows.count)
        var g = [Float](repeating: 0, count: rows * c.inChannels)
        for (k, row) in maskedRows.enumerated() {
            for j in 0..<c.inChannels { g[row * c.inChannels + j] = gMasked[k * c.inChannels + j] }
        }
        g = mlmNorm.backward(input: m1, dy: g)
        g = mlmConv1.backwardInput(g, rows: rows)
        let upBack = upBlock.trainingBackward(g, cache: up.cache, run: run, stopAtFirstAdapter: false)
        g = projectFromHidden.backwardInput(upBack.input!, rows: n * tokens)
        g = projectFromHiddenNorm.backward(input: fromHiddenInput, dy: g)
        var layerBacks: [UVitTransformerLayer.Gradients] = []
        for (i, layer) in layers.enumerated().reversed() {
            let back = layer.trainingBackward(g, cache: layerCaches[i], run: run)
            g = back.input
            layerBacks.append(back)
        }
        g = projectToHidden.backwardInput(g, rows: n * tokens)
        g = projectToHiddenNorm.backward(input: toHiddenInput, dy: g)
        let downBack = downBlock.trainingBackward(g, cache: down.cache, run: run, stopAtFirstAdapter: true)
        guard textGradients else {
            return MaskedTokenGradients(loss: loss, lora: run.gradients, encoderHiddenStates: nil, pooledTextEmb: nil)
        }

        // The text side. ∂L/∂e: the transformer layers' cross-attention reads e; each UVit attention block reads
        // kv_mapper(SiLU(e)) or e.
        var dE = [Float](repeating: 0, count: e.count)
        for back in layerBacks { Ops.add(&dE, back.context) }
        for (block, back) in [(downBlock, downBack), (upBlock, upBack)] {
            for (i, attention) in block.attentionBlocks.enumerated() {
                guard let mapper = attention.kvMapper else {
                    Ops.add(&dE, back.contexts[i])
                    continue
                }
                var dSilu = mapper.backwardInput(back.contexts[i], rows: n * length)
                for j in dSilu.indices { dSilu[j] *= Kernels.siluDerivative(e[j]) }
                Ops.add(&dE, dSilu)
            }
        }
        let dEncoder = encoderProj.backwardInput(encoderProjNorm.backward(input: e0, dy: dE), rows: n * length)

        // ∂L/∂pooled: every modulation is linear(SiLU(cond)), cond = linear_2(SiLU(linear_1([pooled | micro]))).
        let width = c.condEmbedDim + c.microCondEmbedDim
        var condInput = [Float](repeating: 0, count: n * width)
        let micro = microConditioning(batch.microConds)
        for b in 0..<n {
            for i in 0..<c.condEmbedDim { condInput[b * width + i] = batch.pooledTextEmb[b * c.condEmbedDim + i] }
            for i in 0..<c.microCondEmbedDim {
                condInput[b * width + c.condEmbedDim + i] = micro[b * c.microCondEmbedDim + i]
            }
        }
        let h1 = condLinear1(condInput, rows: n)
        let condVector = condLinear2(Ops.silu(h1), rows: n)
        var dSiluCond = [Float](repeating: 0, count: condVector.count)
        for (back, layer) in zip(layerBacks.reversed(), layers) {
            for (k, norm) in [layer.norm1, layer.norm2, layer.norm3].enumerated() {
                Ops.add(&dSiluCond, norm.linear.backwardInput(back.modulations[k], rows: n))
            }
        }
        for (block, back) in [(downBlock, downBack), (upBlock, upBack)] {
            for (i, res) in block.resBlocks.enumerated() {
                Ops.add(&dSiluCond, res.condMapper.backwardInput(back.modulations[i], rows: n))
            }
        }
        for j in dSiluCond.indices { dSiluCond[j] *= Kernels.siluDerivative(condVector[j]) }
        var dHidden = condLinear2.backwardInput(dSiluCond, rows: n)
        for j in dHidden.indices { dHidden[j] *= Kernels.siluDerivative(h1[j]) }
        let dCondInput = condLinear1.backwardInput(dHidden, rows: n)
        var dPooled = [Float](repeating: 0, count: n * c.condEmbedDim)
        for b in 0..<n {
            for i in 0..<c.condEmbedDim { dPooled[b * c.condEmbedDim + i] = dCondInput[b * width + i] }
        }
        return MaskedTokenGradients(
            loss: loss, lora: gradients ? run.gradients : nil, encoderHiddenStates: dEncoder,
            pooledTextEmb: dPooled)
    }
}

/// The adapters of one training step and the gradients they collect.
final class LoRARun {
    let lora: LoRAAdapters
    let byModule: [String: Int]
    var gradients: LoRAGradients
    /// Whether gradients with respect to the text side (contexts, modulations) are wanted as well.
    let inputGradients: Bool

    init(_ lora: LoRAAdapters, inputGradients: Bool = false) {
        self.lora = lora
        self.inputGradients = inputGradients
        byModule = Dictionary(uniqueKeysWithValues: lora.adapters.enumerated().map { ($1.module, $0) })
        gradients = LoRAGradients(zerosLike: lora)
    }

    /// What a Linear's backward pass needs: its input and, when adapted, A·x.
    struct LinearCache {
        let x: [Float]
        let hidden: [Float]?
        let rows: Int
    }

    func adapter(for linear: Linear) -> Int? {
        byModule[String(linear.weight.key.dropLast(".weight".count))]
    }

    /// y = W·x (+ b) + s·B·(A·x) when `linear` is adapted.
    func forward(_ linear: Linear, _ x: [Float], rows: Int) -> ([Float], LinearCache) {
        var y = linear(x, rows: rows)
        guard let i = adapter(for: linear) else { return (y, LinearCache(x: x, hidden: nil, rows: rows)) }
        let r = lora.rank, ad = lora.adapters[i]
        var hidden = [Float](repeating: 0, count: rows * r)
        hidden.withUnsafeMutableBufferPointer { hp in
            Kernels.sgemm(
                m: rows, n: r, k: ad.inFeatures, a: x, lda: ad.inFeatures, b: ad.a, ldb: ad.inFeatures,
                transposeB: true, c: hp.baseAddress!, ldc: r)
        }
        // PEFT adds lora_B(lora_A(x)) * scaling to the base output: the product first, then the scale.
        var delta = [Float](repeating: 0, count: rows * ad.outFeatures)
        delta.withUnsafeMutableBufferPointer { dp in
            Kernels.sgemm(
                m: rows, n: ad.outFeatures, k: r, a: hidden, lda: r, b: ad.b, ldb: r, transposeB: true,
                c: dp.baseAddress!, ldc: ad.outFeatures)
        }
        let s = lora.scale
        for j in 0..<y.count { y[j] += delta[j] * s }
        return (y, LinearCache(x: x, hidden: hidden, rows: rows))
    }

    /// Accumulates ∂L/∂A and ∂L/∂B of `linear`'s adapter; returns ∂L/∂x when `needInput`.
    func backward(_ linear: Linear, _ cache: LinearCache, dy: [Float], needInput: Bool) -> [Float]? {
        var dx = needInput ? linear.backwardInput(dy, rows: cache.rows) : nil
        guard let i = adapter(for: linear), let hidden = cache.hidden else { return dx }
        let r = lora.rank, ad = lora.adapters[i], s = lora.scale, rows = cache.rows
        // dB = s · dyᵀ·(A·x); d(A·x) = s · dy·B; dA = d(A·x)ᵀ·x; dx += d(A·x)·A.
        gradients.b[i].withUnsafeMutableBufferPointer { gb in
            Kernels.sgemm(
                m: ad.outFeatures, n: r, k: rows, a: dy, lda: ad.outFeatures, b: hidden, ldb: r,
                transposeB: false, transposeA: true, c: gb.baseAddress!, ldc: r, alpha: s, beta: 1)
        }
        var dHidden = [Float](repeating: 0, count: rows * r)
        dHidden.withUnsafeMutableBufferPointer { dh in
            Kernels.sgemm(
                m: rows, n: r, k: ad.outFeatures, a: dy, lda: ad.outFeatures, b: ad.b, ldb: r,
                transposeB: false, c: dh.baseAddress!, ldc: r, alpha: s)
        }
        gradients.a[i].withUnsafeMutableBufferPointer { ga in
            Kernels.sgemm(
                m: r, n: ad.inFeatures, k: rows, a: dHidden, lda: r, b: cache.x, ldb: ad.inFeatures,
                transposeB: false, transposeA: true, c: ga.baseAddress!, ldc: ad.inFeatures, beta: 1)
        }
        if needInput {
            dx!.withUnsafeMutableBufferPointer { dp in
                Kernels.sgemm(
                    m: rows, n: ad.inFeatures, k: r, a: dHidden, lda: r, b: ad.a, ldb: ad.inFeatures,
                    transposeB: false, c: dp.baseAddress!, ldc: ad.inFeatures, beta: 1)
            }
        }
        return dx
    }
}

extension Linear {
    /// ∂L/∂x = dy·W (the bias has no input gradient).
    func backwardInput(_ dy: [Float], rows: Int) -> [Float] {
        var dx = [Float](repeating: 0, count: rows * inFeatures)
        dy.withUnsafeBufferPointer { gp in
            dx.withUnsafeMutableBufferPointer { dp in
                weight.withFloats { wp in
                    Kernels.sgemm(
                        m: rows, n: inFeatures, k: outFeatures, a: gp.baseAddress!, lda: outFeatures, b: wp,
                        ldb: inFeatures, transposeB: false, c: dp.baseAddress!, ldc: inFeatures)
                }
            }
        }
        return dx
    }
}

extension RMSNorm {
    /// ∂L/∂x given the forward's input.
    func backward(input x: [Float], dy: [Float]) -> [Float] {
        var dx = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            dy.withUnsafeBufferPointer { gp in
                dx.withUnsafeMutableBufferPointer { dp in
                    Kernels.rmsNormBackward(
                        x: xp.baseAddress!, dy: gp.baseAddress!, rows: x.count / dim, dim: dim, eps: eps,
                        weight: weight?.p, dx: dp.baseAddress!)
                }
            }
        }
        return dx
    }
}

extension LayerNorm {
    /// ∂L/∂x given the forward's input.
    func backward(input x: [Float], dy: [Float]) -> [Float] {
        var dx = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            dy.withUnsafeBufferPointer { gp in
                dx.withUnsafeMutableBufferPointer { dp in
                    Kernels.layerNormBackward(
                        x: xp.baseAddress!, dy: gp.baseAddress!, rows: x.count / dim, dim: dim,
                        eps: eps, weight: weight?.p, dx: dp.baseAddress!)
                }
            }
        }
        return dx
    }
}

extension AdaLayerNormContinuous {
    /// ∂L/∂x of norm(x)·(1 + scale) + shift, given the forward's input; with `modulation gradients` also
    /// ∂L/∂(scale, shift) [batch, 2·dim]: Σ over tokens of dy·norm(x), and of dy.
    func backward(
        input x: [Float], dy: [Float], batch: Int, tokens: Int, modulation: [Float],
        modulationGradients: Bool = false
    ) -> (dx: [Float], dModulation: [Float]?) {
        var g = dy
        for b in 0..<batch {
            let scale = b * 2 * dim
            for t in 0..<tokens {
                let row = (b * tokens + t) * dim
                for i in 0..<dim { g[row + i] *= 1 + modulation[scale + i] }
            }
        }
        let dx = rms.map { $0.backward(input: x, dy: g) } ?? layer!.backward(input: x, dy: g)
        guard modulationGradients else { return (dx, nil) }
        var normed = x
        if let rms { rms(&normed) } else { layer!(&normed) }
        var dm = [Float](repeating: 0, count: batch * 2 * dim)
        for b in 0..<batch {
            let scale = b * 2 * dim, shift = scale + dim
            for t in 0..<tokens {
                let row = (b * tokens + t) * dim
                for i in 0..<dim {
                    dm[scale + i] += dy[row + i] * normed[row + i]
                    dm[shift + i] += dy[row + i]
                }
            }
        }
        return (dx, dm)
    }
}

extension MultiHeadAttention {
    /// What the backward pass of one attention needs.
    struct Cache {
        let q: LoRARun.LinearCache, k: LoRARun.LinearCache, v: LoRARun.LinearCache, out: LoRARun.LinearCache
        let queries: [Float], keys: [Float], values: [Float]
        let batch: Int, queryCount: Int, keyCount: Int
        let selfAttention: Bool, causal: Bool
    }

    /// Attention of `x` over `context` (self-attention when `context` is nil), adapters applied.
    func trainingForward(
        _ x: [Float], batch: Int, queries: Int, context: [Float]?, keys: Int, causal: Bool = false,
        run: LoRARun
    ) -> ([Float], Cache) {
        let source = context ?? x
        let (q, qc) = run.forward(toQ, x, rows: batch * queries)
        let (k, kc) = run.forward(toK, source, rows: batch * keys)
        let (v, vc) = run.forward(toV, source, rows: batch * keys)
        let inner = heads * headDim
        var attended = [Float](repeating: 0, count: batch * queries * inner)
        attended.withUnsafeMutableBufferPointer { op in
            Kernels.attention(
                q: q, qStride: inner, k: k, kStride: inner, v: v, vStride: inner, batch: batch,
                queries: queries, keys: keys, heads: heads, headDim: headDim, causal: causal,
                output: op.baseAddress!, outStride: inner)
        }
        let (y, oc) = run.forward(toOut, attended, rows: batch * queries)
        return (
            y,
            Cache(
                q: qc, k: kc, v: vc, out: oc, queries: q, keys: k, values: v, batch: batch,
                queryCount: queries, keyCount: keys, selfAttention: context == nil, causal: causal)
        )
    }

    /// Collects the adapters' gradients; returns ∂L/∂x (through Q, and K and V too for self-attention) and, for
    /// cross-attention when the run wants text gradients, ∂L/∂context (through K and V).
    func trainingBackward(_ dy: [Float], cache c: Cache, run: LoRARun, needInput: Bool)
        -> (input: [Float]?, context: [Float]?)
    {
        let dAttended = run.backward(toOut, c.out, dy: dy, needInput: true)!
        var dq = [Float](repeating: 0, count: c.queries.count), dk = [Float](repeating: 0, count: c.keys.count),
            dv = [Float](repeating: 0, count: c.values.count)
        dq.withUnsafeMutableBufferPointer { qp in
            dk.withUnsafeMutableBufferPointer { kp in
                dv.withUnsafeMutableBufferPointer { vp in
                    Kernels.attentionBackward(
                        q: c.queries, k: c.keys, v: c.values, dOut: dAttended, batch: c.batch,
                        queries: c.queryCount, keys: c.keyCount, heads: heads, headDim: headDim,
                        causal: c.causal, dQ: qp.baseAddress!, dK: kp.baseAddress!,
                        dV: vp.baseAddress!)
                }
            }
        }
        var dx = run.backward(toQ, c.q, dy: dq, needInput: needInput)
        let throughKV = c.selfAttention ? needInput : run.inputGradients
        let dxk = run.backward(toK, c.k, dy: dk, needInput: throughKV)
        let dxv = run.backward(toV, c.v, dy: dv, needInput: throughKV)
        guard throughKV else { return (dx, nil) }
        var dSource = dxk!
        Ops.add(&dSource, dxv!)
        if c.selfAttention {
            Ops.add(&dx!, dSource)
            return (dx, nil)
        }
        return (dx, dSource)
    }
}

extension UVitTransformerLayer {
    /// The inputs each sub-layer read.
    struct Cache {
        let h0: [Float], h1: [Float], h2: [Float]
        let attn1: MultiHeadAttention.Cache, attn2: MultiHeadAttention.Cache
        let projected: [Float]
        let adaLN: LayerModulation
        let batch: Int, tokens: Int
    }

    func trainingForward(
        _ x: [Float], batch: Int, tokens: Int, context: [Float], adaLN: LayerModulation, textLength: Int,
        run: LoRARun
    ) -> ([Float], Cache) {
        let (a1, c1) = attn1.trainingForward(
            norm1(x, batch: batch, tokens: tokens, modulation: adaLN.norm1), batch: batch,
            queries: tokens, context: nil, keys: tokens, run: run)
        var h1 = a1
        Ops.add(&h1, x)
        let (a2, c2) = attn2.trainingForward(
            norm2(h1, batch: batch, tokens: tokens, modulation: adaLN.norm2),
            batch: batch, queries: tokens, context: context, keys: textLength, run: run)
        var h2 = a2
        Ops.add(&h2, h1)
        let projected = ffProj(norm3(h2, batch: batch, tokens: tokens, modulation: adaLN.norm3), rows: batch * tokens)
        let gated = Self.geglu(projected, rows: batch * tokens, inner: inner)
        var out = ffOut(gated, rows: batch * tokens)
        Ops.add(&out, h2)
        return (
            out,
            Cache(
                h0: x, h1: h1, h2: h2, attn1: c1, attn2: c2, projected: projected, adaLN: adaLN,
                batch: batch, tokens: tokens)
        )
    }

    /// ∂L/∂input and, when the run wants text gradients, ∂L/∂context and ∂L/∂(each AdaLN's modulation).
    struct Gradients {
        let input: [Float]
        let context: [Float]
        let modulations: [[Float]]
    }

    func trainingBackward(_ dOut: [Float], cache c: Cache, run: LoRARun) -> Gradients {
        let rows = c.batch * c.tokens, text = run.inputGradients
        // GEGLU: out = a ⊙ gelu(gate); da = dy ⊙ gelu(gate), dgate = dy ⊙ a ⊙ gelu′(gate).
        let dGated = ffOut.backwardInput(dOut, rows: rows)
        var dProjected = [Float](repeating: 0, count: c.projected.count)
        dProjected.withUnsafeMutableBufferPointer { dp in
            Kernels.gegluBackward(
                projected: c.projected, dy: dGated, rows: rows, inner: inner, dProjected: dp.baseAddress!)
        }
        let (dn3, dm3) = norm3.backward(
            input: c.h2, dy: ffProj.backwardInput(dProjected, rows: rows), batch: c.batch,
            tokens: c.tokens, modulation: c.adaLN.norm3, modulationGradients: text)
        var dh2 = dn3
        Ops.add(&dh2, dOut)
        let (dq2, dContext) = attn2.trainingBackward(dh2, cache: c.attn2, run: run, needInput: true)
        let (dn2, dm2) = norm2.backward(
            input: c.h1, dy: dq2!, batch: c.batch, tokens: c.tokens,
            modulation: c.adaLN.norm2, modulationGradients: text)
        var dh1 = dn2
        Ops.add(&dh1, dh2)
        let dn1 = attn1.trainingBackward(dh1, cache: c.attn1, run: run, needInput: true).input!
        let (dx, dm1) = norm1.backward(
            input: c.h0, dy: dn1, batch: c.batch, tokens: c.tokens, modulation: c.adaLN.norm1,
            modulationGradients: text)
        var dh0 = dx
        Ops.add(&dh0, dh1)
        return Gradients(input: dh0, context: dContext ?? [], modulations: text ? [dm1!, dm2!, dm3!] : [])
    }
}

extension ConvNextBlock {
    struct Cache {
        let input: [Float], depthwiseOut: [Float], normed: [Float], preGelu: [Float], activated: [Float]
        let responseNorm: [[Float]], responseMean: [Float]
        let modulation: [Float]
        /// linear_2's output plus the input: what the modulation scales.
        let residual: [Float]
        let batch: Int, height: Int, width: Int
    }

    func trainingForward(_ x: [Float], batch: Int, height: Int, width: Int, modulation: [Float]) -> ([Float], Cache) {
        let ch = channels, tokens = height * width
        let y = depthwiseConvolution(x, batch: batch, height: height, width: width)
        var normed = y
        norm(&normed)
        let pre = linear1(normed, rows: batch * tokens)
        var act = pre
        act.withUnsafeMutableBufferPointer { Kernels.gelu($0.baseAddress!, count: $0.count) }
        var h = act
        let (norms, means) = responseNormalize(&h, batch: batch, tokens: tokens)
        var residual = linear2(h, rows: batch * tokens)
        Ops.add(&residual, x)
        var out = residual
        for b in 0..<batch {
            let scale = b * 2 * ch, shift = scale + ch
            for t in 0..<tokens {
                let row = (b * tokens + t) * ch
                for i in 0..<ch {
                    out[row + i] = residual[row + i] * (1 + modulation[scale + i]) + modulation[shift + i]
                }
            }
        }
        return (
            out,
            Cache(
                input: x, depthwiseOut: y, normed: normed, preGelu: pre, activated: act,
                responseNorm: norms, responseMean: means, modulation: modulation, residual: residual,
                batch: batch, height: height, width: width)
        )
    }

    /// ∂L/∂(scale, shift) of the modulation [batch, 2·channels]: Σ over positions of dy·(linear_2 + input), and of dy.
    func modulationBackward(_ dOut: [Float], cache c: Cache) -> [Float] {
        let ch = channels, tokens = c.height * c.width
        var dm = [Float](repeating: 0, count: c.batch * 2 * ch)
        for b in 0..<c.batch {
            let scale = b * 2 * ch, shift = scale + ch
            for t in 0..<tokens {
                let row = (b * tokens + t) * ch
                for i in 0..<ch {
                    dm[scale + i] += dOut[row + i] * c.residual[row + i]
                    dm[shift + i] += dOut[row + i]
                }
            }
        }
        return dm
    }

    func trainingBackward(_ dOut: [Float], cache c: Cache) -> [Float] {
        let ch = channels, tokens = c.height * c.width, wide = 4 * ch
        var dPre = dOut
        for b in 0..<c.batch {
            let scale = b * 2 * ch
            for t in 0..<tokens {
                let row = (b * tokens + t) * ch
                for i in 0..<ch { dPre[row + i] *= 1 + c.modulation[scale + i] }
            }
        }
        let dGRN = linear2.backwardInput(dPre, rows: c.batch * tokens)
        // GlobalResponseNorm: y = γ·(x·N) + β + x, N_i = G_i / (mean_j G_j + 1e-6), G_i = ‖x_{·,i}‖ over positions.
        var dAct = [Float](repeating: 0, count: dGRN.count)
        for b in 0..<c.batch {
            let g = c.responseNorm[b], denom = c.responseMean[b] + 1e-6
            var dN = [Float](repeating: 0, count: wide)
            for t in 0..<tokens {
                let row = (b * tokens + t) * wide
                for i in 0..<wide {
                    let dy = dGRN[row + i]
                    dN[i] += dy * grnGamma.p[i] * c.activated[row + i]
                    dAct[row + i] = dy * (grnGamma.p[i] * g[i] / denom + 1)
                }
            }
            var weighted: Float = 0
            for i in 0..<wide { weighted += dN[i] * g[i] }
            let shared = weighted / (denom * denom * Float(wide))
            for i in 0..<wide {
                let dG = dN[i] / denom - shared
                // ∂G_i/∂x = x / G_i (torch's norm gives 0 where G_i = 0).
                guard g[i] > 0 else { continue }
                let k = dG / g[i]
                for t in 0..<tokens {
                    let row = (b * tokens + t) * wide
                    dAct[row + i] += k * c.activated[row + i]
                }
            }
        }
        c.preGelu.withUnsafeBufferPointer { xp in
            dAct.withUnsafeMutableBufferPointer { gp in
                Kernels.geluBackward(x: xp.baseAddress!, dy: gp.baseAddress!, count: gp.count)
            }
        }
        let dNormed = linear1.backwardInput(dAct, rows: c.batch * tokens)
        let dDepthwise = norm.backward(input: c.depthwiseOut, dy: dNormed)
        var dx = [Float](repeating: 0, count: c.input.count)
        dDepthwise.withUnsafeBufferPointer { gp in
            dx.withUnsafeMutableBufferPointer { dp in
                Kernels.depthwiseConv3x3BackwardNHWC(
                    dy: gp.baseAddress!, batch: c.batch, height: c.height,
                    width: c.width, channels: ch, weight: depthwise.p,
                    dx: dp.baseAddress!)
            }
        }
        Ops.add(&dx, dPre)
        return dx
    }
}

extension SkipFFTransformerBlock {
    struct Cache {
        let x: [Float], h: [Float]
        let attn1: MultiHeadAttention.Cache, attn2: MultiHeadAttention.Cache
    }

    func trainingForward(_ x: [Float], batch: Int, tokens: Int, context: [Float], textLength: Int, run: LoRARun)
        -> ([Float], Cache)
    {
        var n = x
        norm1(&n)
        let (a1, c1) = attn1.trainingForward(
            n, batch: batch, queries: tokens, context: context, keys: textLength,
            run: run)
        var h = a1
        Ops.add(&h, x)
        n = h
        norm2(&n)
        let (a2, c2) = attn2.trainingForward(
            n, batch: batch, queries: tokens, context: context, keys: textLength,
            run: run)
        var out = a2
        Ops.add(&out, h)
        return (out, Cache(x: x, h: h, attn1: c1, attn2: c2))
    }

    /// ∂L/∂input (when `needInput`) and, for text gradients, ∂L/∂context (attn1's and attn2's keys and values).
    func trainingBackward(_ dOut: [Float], cache c: Cache, run: LoRARun, needInput: Bool)
        -> (input: [Float]?, context: [Float]?)
    {
        let (dn2, dc2) = attn2.trainingBackward(dOut, cache: c.attn2, run: run, needInput: true)
        var dh = norm2.backward(input: c.h, dy: dn2!)
        Ops.add(&dh, dOut)
        let (dn1, dc1) = attn1.trainingBackward(dh, cache: c.attn1, run: run, needInput: needInput)
        var context = dc1
        if let dc2 { Ops.add(&context!, dc2) }
        guard let dn1 else { return (nil, context) }
        var dx = norm1.backward(input: c.x, dy: dn1)
        Ops.add(&dx, dh)
        return (dx, context)
    }
}

extension UVitBlock {
    struct Cache {
        let res: [ConvNextBlock.Cache]
        let attention: [SkipFFTransformerBlock.Cache]
        let upsampleInput: [Float]?
        let batch: Int, height: Int, width: Int
    }

    func trainingForward(
        _ input: [Float], batch: Int, height: inout Int, width: inout Int, contexts: [[Float]],
        adaLN: [[Float]], textLength: Int, run: LoRARun
    ) -> (output: [Float], cache: Cache) {
        // Downsampling comes before every adapter of the block: run as in inference.
        var x = downsampled(input, batch: batch, height: &height, width: &width)
        var res: [ConvNextBlock.Cache] = [], attention: [SkipFFTransformerBlock.Cache] = []
        for i in 0..<resBlocks.count {
            let (r, rc) = resBlocks[i].trainingForward(
                x, batch: batch, height: height, width: width,
                modulation: adaLN[i])
            let (a, ac) = attentionBlocks[i].trainingForward(
                r, batch: batch, tokens: height * width,
                context: contexts[i], textLength: textLength, run: run)
            res.append(rc)
            attention.append(ac)
            x = a
        }
        let (h, w) = (height, width)
        let upsampleInput = upNorm != nil ? x : nil
        x = upsampled(x, batch: batch, height: &height, width: &width)
        return (
            x,
            Cache(
                res: res, attention: attention, upsampleInput: upsampleInput, batch: batch, height: h,
                width: w)
        )
    }

    /// ∂L/∂input (nil when `stopAtFirstAdapter`: in the down block nothing before the first attention is trained)
    /// and, when the run wants text gradients, ∂L/∂context per attention block and ∂L/∂modulation per res block.
    struct Gradients {
        let input: [Float]?
        let contexts: [[Float]]
        let modulations: [[Float]]
    }

    func trainingBackward(_ dOut: [Float], cache c: Cache, run: LoRARun, stopAtFirstAdapter: Bool) -> Gradients {
        var g = dOut
        if let upNorm, let upConv, let input = c.upsampleInput {
            var dn = [Float](repeating: 0, count: input.count)
            dOut.withUnsafeBufferPointer { gp in
                dn.withUnsafeMutableBufferPointer { dp in
                    upConv.withFloats { w in
                        Kernels.convTranspose2x2Stride2BackwardNHWC(
                            dy: gp.baseAddress!, batch: c.batch, height: c.height,
                            width: c.width, channels: channels, weight: w,
                            outChannels: channels, dx: dp.baseAddress!)
                    }
                }
            }
            g = upNorm.backward(input: input, dy: dn)
        }
        let text = run.inputGradients
        var contexts = [[Float]](repeating: [], count: resBlocks.count)
        var modulations = [[Float]](repeating: [], count: resBlocks.count)
        for i in (0..<resBlocks.count).reversed() {
            let last = stopAtFirstAdapter && i == 0
            // The first res block's modulation still reads the text: its output gradient is needed for that.
            let (ga, context) = attentionBlocks[i].trainingBackward(
                g, cache: c.attention[i], run: run,
                needInput: !last || text)
            if text { contexts[i] = context! }
            guard let ga else { return Gradients(input: nil, contexts: contexts, modulations: modulations) }
            if text { modulations[i] = resBlocks[i].modulationBackward(ga, cache: c.res[i]) }
            if last { return Gradients(input: nil, contexts: contexts, modulations: modulations) }
            g = resBlocks[i].trainingBackward(ga, cache: c.res[i])
        }
        return Gradients(input: g, contexts: contexts, modulations: modulations)
    }
}
