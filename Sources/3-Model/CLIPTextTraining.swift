// The text encoder's backward pass, for LoRA on its q_proj/k_proj/v_proj (train_amused.py --train_text_encoder
// --text_encoder_use_lora): from the gradients of the two outputs the transformer reads — hidden_states[-2] and
// text_embeds — back through the causal self-attention, LayerNorms and quick_gelu MLPs to the first layer's adapters.
// The forward is the inference forward of CLIPTextModel.swift with the adapters added and each layer's input kept
// (every row of the last layer too: the inference forward computes only its pooled rows).
// The embeddings are frozen and below every adapter: nothing is propagated into them.

import AmusedKernels

extension CLIPTextModel {
    /// What the backward pass needs from a training forward.
    public struct TrainingCache {
        let run: LoRARun
        let layers: [CLIPEncoderLayer.Cache]
        let finalInput: [Float]
        let pooledRows: [Int]
        let batch: Int, length: Int
    }

    /// The outputs for `ids` with `lora` on q/k/v_proj, and what `trainingBackward` needs.
    public func trainingForward(_ ids: [Int64], batch: Int, lora: LoRAAdapters) throws(ModelError)
        -> (output: TextEncoderOutput, cache: TrainingCache)
    {
        guard lora.component == "text_encoder",
            lora.adapters.map(\.module) == (try LoRAAdapters.targets(config)).map(\.module),
            lora.adapters.allSatisfy({
                $0.a.count == lora.rank * $0.inFeatures && $0.b.count == $0.outFeatures * lora.rank
            })
        else {
            throw .invalidInput("the adapters were made for a different text encoder config")
        }
        var (x, length) = try embeddings(ids, batch: batch)
        let d = config.hiddenSize
        let run = LoRARun(lora)
        var penultimate = x
        var caches: [CLIPEncoderLayer.Cache] = []
        for (i, layer) in layers.enumerated() {
            if i == layers.count - 1 { penultimate = x }
            let (y, cache) = layer.trainingForward(x, batch: batch, length: length, run: run)
            caches.append(cache)
            x = y
        }
        let finalInput = x
        finalLayerNorm(&x)
        var pooled = [Float](repeating: 0, count: batch * d), rows: [Int] = []
        for b in 0..<batch {
            let at = b * length + pooledIndex(ids[(b * length)..<((b + 1) * length)])
            rows.append(at)
            for i in 0..<d { pooled[b * d + i] = x[at * d + i] }
        }
        let embeds = textProjection(pooled, rows: batch)
        return (
            TextEncoderOutput(penultimateHiddenStates: penultimate, textEmbeds: embeds),
            TrainingCache(
                run: run, layers: caches, finalInput: finalInput, pooledRows: rows, batch: batch,
                length: length)
        )
    }

    /// ∂L/∂A and ∂L/∂B of every adapter, given ∂L/∂hidden_states[-2] and ∂L/∂text_embeds.
    public func trainingBackward(penultimate dPenultimate: [Float], textEmbeds dEmbeds: [Float], cache c: TrainingCache)
        -> LoRAGradients
    {
        let d = config.hiddenSize, rows = c.batch * c.length
        // text_embeds = projection(final_layer_norm(x)[pooled rows]).
        let dPooled = textProjection.backwardInput(dEmbeds, rows: c.batch)
        var dNormed = [Float](repeating: 0, count: rows * d)
        for (b, at) in c.pooledRows.enumerated() {
            for i in 0..<d { dNormed[at * d + i] = dPooled[b * d + i] }
        }
        var g = finalLayerNorm.backward(input: c.finalInput, dy: dNormed)
        for i in layers.indices.reversed() {
            guard let dx = layers[i].trainingBackward(g, cache: c.layers[i], run: c.run, needInput: i > 0) else {
                break
            }
            g = dx
            // hidden_states[-2] is the last layer's input: its gradient joins below that layer.
            if i == layers.count - 1 { Ops.add(&g, dPenultimate) }
        }
        return c.run.gradients
    }
}

extension CLIPEncoderLayer {
    struct Cache {
        /// The layer's input, and the residual stream after the attention (x + attn(ln1(x))).
        let x: [Float], afterAttention: [Float]
        let attention: MultiHeadAttention.Cache
        let preActivation: [Float]
    }

    func trainingForward(_ x: [Float], batch: Int, length: Int, run: LoRARun) -> ([Float], Cache) {
        var h = x
        layerNorm1(&h)
        let (a, ac) = attention.trainingForward(
            h, batch: batch, queries: length, context: nil, keys: length,
            causal: true, run: run)
        var out = a
        Ops.add(&out, x)
        var m = out
        layerNorm2(&m)
        let pre = fc1(m, rows: batch * length)
        var inner = pre
        inner.withUnsafeMutableBufferPointer { p in
            if quickGelu {
                Kernels.quickGelu(p.baseAddress!, count: p.count)
            } else {
                Kernels.gelu(p.baseAddress!, count: p.count)
            }
        }
        var y = fc2(inner, rows: batch * length)
        Ops.add(&y, out)
        return (y, Cache(x: x, afterAttention: out, attention: ac, preActivation: pre))
    }

    /// Collects the adapters' gradients; ∂L/∂x when `needInput`.
    func trainingBackward(_ dy: [Float], cache c: Cache, run: LoRARun, needInput: Bool) -> [Float]? {
        let rows = c.x.count / layerNorm1.dim
        var dInner = fc2.backwardInput(dy, rows: rows)
        c.preActivation.withUnsafeBufferPointer { xp in
            dInner.withUnsafeMutableBufferPointer { gp in
                if quickGelu {
                    Kernels.quickGeluBackward(x: xp.baseAddress!, dy: gp.baseAddress!, count: gp.count)
                } else {
                    Kernels.geluBackward(x: xp.baseAddress!, dy: gp.baseAddress!, count: gp.count)
                }
            }
        }
        var dOut = layerNorm2.backward(input: c.afterAttention, dy: fc1.backwardInput(dInner, rows: rows))
        Ops.add(&dOut, dy)
        guard let dh = attention.trainingBackward(dOut, cache: c.attention, run: run, needInput: needInput).input
        else { return nil }
        var dx = layerNorm1.backward(input: c.x, dy: dh)
        Ops.add(&dx, dOut)
        return dx
    }
}

extension UVit2DModel {
    /// The masked-token loss with the text encoder in the step: `textIds` [batch, L] are encoded with `textLoRA`
    /// applied (replacing the batch's text inputs), and the gradients of both sets of adapters are returned.
    public func maskedTokenLoss(
        _ batch: MaskedTokenBatch, lora: LoRAAdapters, textEncoder: CLIPTextModel,
        textIds: [Int64], textLoRA: LoRAAdapters
    ) throws(ModelError)
        -> (loss: Float, transformer: LoRAGradients, textEncoder: LoRAGradients)
    {
        let (text, cache) = try textEncoder.trainingForward(textIds, batch: batch.batch, lora: textLoRA)
        var b = batch
        b.encoderHiddenStates = text.penultimateHiddenStates
        b.pooledTextEmb = text.textEmbeds
        let r = try train(b, lora: lora, textGradients: true)
        let textGradients = textEncoder.trainingBackward(
            penultimate: r.encoderHiddenStates!,
            textEmbeds: r.pooledTextEmb!, cache: cache)
        return (r.loss, r.lora!, textGradients)
    }
}
