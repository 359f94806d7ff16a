// port of diffusers/models/unets/uvit_2d.py (+ attention.py, normalization.py, embeddings.py), v0.35.2
//
// Activations stay in NHWC rows ([batch·h·w, channels]) from the embedding to the MLM head, so 1×1 convolutions
// are plain GEMMs and no permute happens between layers; the logits are returned NCHW like diffusers'.

import AmusedKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The transformer's config (`transformer/config.json`); defaults are diffusers' `UVit2DModel` defaults.
public struct UVit2DConfig: Sendable, Equatable {
    /// Width of the 22 transformer layers.
    public var hiddenSize = 1024
    /// Biases on every Linear/Conv (and on the AdaLN LayerNorm).
    public var useBias = false
    /// Width of the pooled text embedding.
    public var condEmbedDim = 768
    /// Sinusoidal width per micro-conditioning value.
    public var microCondEncodeDim = 256
    /// 5 × microCondEncodeDim.
    public var microCondEmbedDim = 1280
    /// Width of the text encoder's hidden states.
    public var encoderHiddenSize = 768
    /// Token embedding rows (codebook + mask, rounded).
    public var vocabSize = 8256
    /// Number of VQ codes the head predicts.
    public var codebookSize = 8192
    /// Token embedding width.
    public var inChannels = 768
    /// Width of the convolutional blocks.
    public var blockOutChannels = 768
    /// ConvNext + attention pairs per block.
    public var numResBlocks = 3
    /// 2×2 stride-2 downsampling before the down block (amused-512).
    public var downsample = false
    /// 2×2 transposed-convolution upsampling after the up block (amused-512).
    public var upsample = false
    /// Attention heads in the UVit blocks.
    public var blockNumHeads = 12
    /// Number of transformer layers.
    public var numHiddenLayers = 22
    /// Attention heads in the transformer layers.
    public var numAttentionHeads = 16
    /// GEGLU inner width.
    public var intermediateSize = 2816
    /// Epsilon of every norm (except the UVit attention blocks' norms, hard-coded 1e-6).
    public var layerNormEps: Float = 1e-6
    /// Whether norms have a learned gain.
    public var lnElementwiseAffine = true
    /// Token grid side the model was trained for (not used by the forward pass).
    public var sampleSize = 64

    /// The diffusers defaults.
    public init() {}
}

/// One transformer layer's AdaLN (scale, shift) for its three norms, [batch, 2·hidden] each.
struct LayerModulation {
    let norm1: [Float], norm2: [Float], norm3: [Float]
}

/// Everything in a forward pass that depends only on the text and micro-conditioning, not on the tokens: computed
/// once per generation and reused at every sampling step.
public struct UVitConditioning: Sendable {
    /// Batch size.
    public let batch: Int
    /// Text tokens.
    let textLength: Int
    /// Per-layer cross-attention keys/values of the transformer layers.
    let layerKV: [(k: [Float], v: [Float])]
    /// Per-layer AdaLN (scale, shift) for norm1, norm2, norm3.
    let layerAdaLN: [LayerModulation]
    /// Down and up blocks: per attention block, keys/values for attn1 and attn2; per res block, (scale, shift).
    let downKV: [[(k: [Float], v: [Float])]]
    let upKV: [[(k: [Float], v: [Float])]]
    let downAdaLN: [[Float]]
    let upAdaLN: [[Float]]
}

/// UVit2DModel: token embedding, ConvNext/attention down block, 22 AdaLN transformer layers, up block, MLM head.
public struct UVit2DModel: Sendable {
    /// The config the graph was built from.
    public let config: UVit2DConfig
    let encoderProj: Linear
    let encoderProjNorm: RMSNorm
    let embeddings: Param
    let embedNorm: RMSNorm
    let embedConv: Linear
    let condLinear1: Linear
    let condLinear2: Linear
    let downBlock: UVitBlock
    let projectToHiddenNorm: RMSNorm
    let projectToHidden: Linear
    let layers: [UVitTransformerLayer]
    let projectFromHiddenNorm: RMSNorm
    let projectFromHidden: Linear
    let upBlock: UVitBlock
    let mlmConv1: Linear
    let mlmNorm: RMSNorm
    let mlmConv2: Linear

    /// Builds the graph; parameters come from `scope` (diffusers names).
    public init(config c: UVit2DConfig, scope s: ParameterScope) throws(ModelError) {
        guard c.hiddenSize % c.numAttentionHeads == 0, c.blockOutChannels % c.blockNumHeads == 0 else {
            throw .invalidConfig("hidden_size / block_out_channels must be divisible by their head counts")
        }
        guard c.microCondEncodeDim % 2 == 0, c.microCondEmbedDim == 5 * c.microCondEncodeDim else {
            throw .invalidConfig(
                "micro_cond_embed_dim (\(c.microCondEmbedDim)) must be 5 × an even "
                    + "micro_cond_encode_dim (\(c.microCondEncodeDim))")
        }
        config = c
        let bias = c.useBias, affine = c.lnElementwiseAffine, eps = c.layerNormEps
        encoderProj = try Linear(s.child("encoder_proj"), in: c.encoderHiddenSize, out: c.hiddenSize, bias: bias)
        encoderProjNorm = try RMSNorm(s.child("encoder_proj_layer_norm"), dim: c.hiddenSize, eps: eps, affine: affine)
        let embed = s.child("embed")
        embeddings = try embed.child("embeddings").param("weight", [c.vocabSize, c.inChannels], use: .embedding)
        embedNorm = try RMSNorm(embed.child("layer_norm"), dim: c.inChannels, eps: eps, affine: affine)
        embedConv = try Linear.conv1x1(embed.child("conv"), in: c.inChannels, out: c.blockOutChannels, bias: bias)
        // TimestepEmbedding(micro_cond_embed_dim + cond_embed_dim → hidden): both linears take use_bias.
        condLinear1 = try Linear(
            s.child("cond_embed").child("linear_1"), in: c.microCondEmbedDim + c.condEmbedDim,
            out: c.hiddenSize, bias: bias)
        condLinear2 = try Linear(
            s.child("cond_embed").child("linear_2"), in: c.hiddenSize, out: c.hiddenSize, bias: bias)
        downBlock = try UVitBlock(s.child("down_block"), config: c, downsample: c.downsample, upsample: false)
        projectToHiddenNorm = try RMSNorm(
            s.child("project_to_hidden_norm"), dim: c.blockOutChannels, eps: eps,
            affine: affine)
        projectToHidden = try Linear(
            s.child("project_to_hidden"), in: c.blockOutChannels, out: c.hiddenSize, bias: bias)
        var layers: [UVitTransformerLayer] = []
        for i in 0..<c.numHiddenLayers {
            layers.append(try UVitTransformerLayer(s.child("transformer_layers").child("\(i)"), config: c))
        }
        self.layers = layers
        projectFromHiddenNorm = try RMSNorm(
            s.child("project_from_hidden_norm"), dim: c.hiddenSize, eps: eps,
            affine: affine)
        projectFromHidden = try Linear(
            s.child("project_from_hidden"), in: c.hiddenSize, out: c.blockOutChannels,
            bias: bias)
        upBlock = try UVitBlock(s.child("up_block"), config: c, downsample: false, upsample: c.upsample)
        // ConvMlmLayer: conv1 goes block_out → in_channels, conv2 in_channels → codebook.
        mlmConv1 = try Linear.conv1x1(
            s.child("mlm_layer").child("conv1"), in: c.blockOutChannels, out: c.inChannels,
            bias: bias)
        mlmNorm = try RMSNorm(s.child("mlm_layer").child("layer_norm"), dim: c.inChannels, eps: eps, affine: affine)
        mlmConv2 = try Linear.conv1x1(
            s.child("mlm_layer").child("conv2"), in: c.inChannels, out: c.codebookSize,
            bias: bias)
    }

    /// Every parameter the config implies, in declaration order.
    public static func parameterSpecs(_ config: UVit2DConfig) throws(ModelError) -> [ParameterSpec] {
        let scope = ParameterScope.collecting()
        _ = try UVit2DModel(config: config, scope: scope)
        return scope.specs
    }

    /// The micro-conditioning embedding: for each value x and k < half, [cos(x·f_k) | sin(x·f_k)] with
    /// f_k = exp(−ln(10000)·k/half), computed in float32 in torch's order (`get_timestep_embedding`,
    /// flip_sin_to_cos=True, downscale_freq_shift=0: cosine half first).
    func microConditioning(_ microConds: [Float]) -> [Float] {
        let dim = config.microCondEncodeDim, half = dim / 2
        let logPeriod = Float(-log(10000.0))
        var freqs = [Float](repeating: 0, count: half)
        for k in 0..<half { freqs[k] = expf(logPeriod * Float(k) / Float(half)) }
        var out = [Float](repeating: 0, count: microConds.count * dim)
        for (i, x) in microConds.enumerated() {
            for k in 0..<half {
                let a = x * freqs[k]
                out[i * dim + k] = cosf(a)
                out[i * dim + half + k] = sinf(a)
            }
        }
        return out
    }

    /// Computes the step-invariant work: projected text, the conditioning vector, every cross-attention K/V and
    /// every AdaLN modulation. `encoderHiddenStates` [B, L, encoder_hidden_size], `pooledTextEmb` [B, cond_embed_dim],
    /// `microConds` [B, 5] = [width, height, crop top, crop left, aesthetic score].
    public func conditioning(
        encoderHiddenStates: [Float], pooledTextEmb: [Float], microConds: [Float], batch: Int,
        trace: Trace? = nil
    ) throws(ModelError) -> UVitConditioning {
        try conditioning(
            encoderHiddenStates: encoderHiddenStates, pooledTextEmb: pooledTextEmb, microConds: microConds,
            batch: batch, trace: trace, keysAndValues: true)
    }

    /// The same; without `keysAndValues` the cross-attention K/V are left empty (training recomputes them with its
    /// adapters).
    func conditioning(
        encoderHiddenStates: [Float], pooledTextEmb: [Float], microConds: [Float], batch: Int,
        trace: Trace?, keysAndValues: Bool
    ) throws(ModelError) -> UVitConditioning {
        let c = config
        guard batch > 0, encoderHiddenStates.count % (batch * c.encoderHiddenSize) == 0,
            pooledTextEmb.count == batch * c.condEmbedDim, microConds.count == batch * 5
        else {
            throw .invalidInput(
                "conditioning shapes do not match batch \(batch): encoder_hidden_states "
                    + "\(encoderHiddenStates.count), pooled_text_emb \(pooledTextEmb.count), micro_conds \(microConds.count)"
            )
        }
        let length = encoderHiddenStates.count / (batch * c.encoderHiddenSize)
        var e = encoderProj(encoderHiddenStates, rows: batch * length)
        encoderProjNorm(&e)
        trace?.record("encoder_proj_layer_norm", e, [batch, length, c.hiddenSize])
        let micro = microConditioning(microConds)
        var condInput = [Float](repeating: 0, count: batch * (c.condEmbedDim + c.microCondEmbedDim))
        let width = c.condEmbedDim + c.microCondEmbedDim
        for b in 0..<batch {
            for i in 0..<c.condEmbedDim { condInput[b * width + i] = pooledTextEmb[b * c.condEmbedDim + i] }
            for i in 0..<c.microCondEmbedDim {
                condInput[b * width + c.condEmbedDim + i] = micro[b * c.microCondEmbedDim + i]
            }
        }
        let hidden = Ops.silu(condLinear1(condInput, rows: batch))
        let cond = condLinear2(hidden, rows: batch)
        trace?.record("cond_embed", cond, [batch, c.hiddenSize])
        // Every AdaLN mapper and ConvNext mapper reads SiLU(c).
        let siluCond = Ops.silu(cond)
        return UVitConditioning(
            batch: batch, textLength: length,
            layerKV: keysAndValues ? layers.map { $0.attn2.keysAndValues(e, rows: batch * length) } : [],
            layerAdaLN: layers.map { layer in
                LayerModulation(
                    norm1: layer.norm1.modulation(siluCond, batch: batch),
                    norm2: layer.norm2.modulation(siluCond, batch: batch),
                    norm3: layer.norm3.modulation(siluCond, batch: batch))
            },
            downKV: keysAndValues ? downBlock.keysAndValues(e, batch: batch, length: length) : [],
            upKV: keysAndValues ? upBlock.keysAndValues(e, batch: batch, length: length) : [],
            downAdaLN: downBlock.resBlocks.map { $0.condMapper(siluCond, rows: batch) },
            upAdaLN: upBlock.resBlocks.map { $0.condMapper(siluCond, rows: batch) })
    }

    /// Logits [B, codebook, h, w] (NCHW, like diffusers) for token ids [B, h, w].
    public func callAsFunction(
        _ inputIds: [Int64], height h: Int, width w: Int, conditioning cond: UVitConditioning,
        trace: Trace? = nil
    ) throws(ModelError) -> [Float] {
        let logits = try logitsByPosition(inputIds, height: h, width: w, conditioning: cond, trace: trace)
        return Ops.toNCHW(logits, batch: cond.batch, channels: config.codebookSize, spatial: h * w)
    }

    /// Logits [B, h·w, codebook] — one row per position, the layout the mlm layer computes and the sampler reads.
    public func logitsByPosition(
        _ inputIds: [Int64], height h: Int, width w: Int, conditioning cond: UVitConditioning,
        trace: Trace? = nil
    ) throws(ModelError) -> [Float] {
        let c = config, batch = cond.batch
        guard inputIds.count == batch * h * w else {
            throw .invalidInput("\(inputIds.count) ids for batch \(batch) of \(h)×\(w)")
        }
        if let bad = inputIds.first(where: { $0 < 0 || $0 >= Int64(c.vocabSize) }) {
            throw .invalidInput("token id \(bad) is outside the vocabulary of \(c.vocabSize)")
        }
        if c.downsample && (h % 2 != 0 || w % 2 != 0) { throw .invalidInput("downsampling needs an even token grid") }
        // Embedding → RMSNorm → 1×1 conv (NHWC).
        var x = [Float](repeating: 0, count: inputIds.count * c.inChannels)
        x.withUnsafeMutableBufferPointer { xp in
            for (i, id) in inputIds.enumerated() {
                embeddings.rows(Int(id)..<(Int(id) + 1), into: xp.baseAddress! + i * c.inChannels)
            }
        }
        embedNorm(&x)
        x = embedConv(x, rows: inputIds.count)
        trace?.record("embed", x, [batch, h, w, c.blockOutChannels])
        var (gh, gw) = (h, w)
        x = downBlock(
            x, batch: batch, height: &gh, width: &gw, kv: cond.downKV, adaLN: cond.downAdaLN,
            textLength: cond.textLength, trace: trace, name: "down_block")
        let tokens = gh * gw
        projectToHiddenNorm(&x)
        x = projectToHidden(x, rows: batch * tokens)
        for (i, layer) in layers.enumerated() {
            x = layer(
                x, batch: batch, tokens: tokens, kv: cond.layerKV[i], adaLN: cond.layerAdaLN[i],
                textLength: cond.textLength)
            trace?.record("transformer_layers.\(i)", x, [batch, tokens, c.hiddenSize])
        }
        projectFromHiddenNorm(&x)
        x = projectFromHidden(x, rows: batch * tokens)
        x = upBlock(
            x, batch: batch, height: &gh, width: &gw, kv: cond.upKV, adaLN: cond.upAdaLN,
            textLength: cond.textLength, trace: trace, name: "up_block")
        var m = mlmConv1(x, rows: batch * gh * gw)
        mlmNorm(&m)
        let logits = mlmConv2(m, rows: batch * gh * gw)
        trace?.record("mlm_layer", logits, [batch, gh, gw, c.codebookSize])
        return logits
    }
}

extension Linear {
    /// A 1×1 convolution (weight [out, in, 1, 1]) applied to NHWC rows: the same memory as a Linear weight.
    static func conv1x1(_ scope: ParameterScope, in i: Int, out o: Int, bias: Bool) throws(ModelError) -> Linear {
        let weight = try scope.param("weight", [o, i, 1, 1], use: .linear)
        let b = try scope.param("bias", [o], if: bias)
        return Linear(weight: weight, bias: b, inFeatures: i, outFeatures: o)
    }
}

/// `AdaLayerNormContinuous`: norm(x)·(1 + scale) + shift, (scale, shift) = chunk(linear(SiLU(c)), 2) — scale first.
struct AdaLayerNormContinuous: Sendable {
    let linear: Linear
    let rms: RMSNorm?
    let layer: LayerNorm?
    let dim: Int

    init(_ scope: ParameterScope, dim: Int, condDim: Int, eps: Float, affine: Bool, bias: Bool, layerNorm: Bool)
        throws(ModelError)
    {
        linear = try Linear(scope.child("linear"), in: condDim, out: 2 * dim, bias: bias)
        if layerNorm {
            // torch.nn.LayerNorm(dim, eps, elementwise_affine, bias=use_bias).
            layer = try LayerNorm(scope.child("norm"), dim: dim, eps: eps, affine: affine, bias: bias)
            rms = nil
        } else {
            rms = try RMSNorm(scope.child("norm"), dim: dim, eps: eps, affine: affine)
            layer = nil
        }
        self.dim = dim
    }

    func modulation(_ siluCond: [Float], batch: Int) -> [Float] { linear(siluCond, rows: batch) }

    func callAsFunction(_ x: [Float], batch: Int, tokens: Int, modulation: [Float]) -> [Float] {
        var y = x
        if let rms { rms(&y) } else { layer!(&y) }
        // Rows split over the cores (each element's arithmetic as before, so the result is bit-identical).
        y.withUnsafeMutableBufferPointer { yp in
            modulation.withUnsafeBufferPointer { m in
                let y = yp.baseAddress!, m = m.baseAddress!
                Parallel.chunks(batch * tokens, cost: 2 * dim) { rows in
                    for r in rows {
                        let scale = (r / tokens) * 2 * dim, shift = scale + dim, row = y + r * dim
                        for i in 0..<dim { row[i] = row[i] * (1 + m[scale + i]) + m[shift + i] }
                    }
                }
            }
        }
        return y
    }
}

/// A `BasicTransformerBlock` with `norm_type="ada_norm_continuous"`: self-attention, cross-attention to the text,
/// GEGLU feed-forward, each after an AdaLN. norm1/norm2 are RMSNorm but norm3 is LayerNorm: diffusers hard-codes
/// the strings "rms_norm", "rms_norm", "layer_norm" (docs/model-notes.md §9.1).
struct UVitTransformerLayer: Sendable {
    let norm1: AdaLayerNormContinuous
    let attn1: MultiHeadAttention
    let norm2: AdaLayerNormContinuous
    let attn2: MultiHeadAttention
    let norm3: AdaLayerNormContinuous
    let ffProj: Linear
    let ffOut: Linear
    let inner: Int

    init(_ s: ParameterScope, config c: UVit2DConfig) throws(ModelError) {
        let d = c.hiddenSize, heads = c.numAttentionHeads, bias = c.useBias
        func ada(_ name: String, _ layerNorm: Bool) throws(ModelError) -> AdaLayerNormContinuous {
            try AdaLayerNormContinuous(
                s.child(name), dim: d, condDim: d, eps: c.layerNormEps,
                affine: c.lnElementwiseAffine, bias: bias, layerNorm: layerNorm)
        }
        norm1 = try ada("norm1", false)
        attn1 = try MultiHeadAttention(
            s.child("attn1"), queryDim: d, contextDim: d, heads: heads, headDim: d / heads,
            bias: bias, outBias: bias)
        norm2 = try ada("norm2", false)
        attn2 = try MultiHeadAttention(
            s.child("attn2"), queryDim: d, contextDim: d, heads: heads, headDim: d / heads,
            bias: bias, outBias: bias)
        norm3 = try ada("norm3", true)
        inner = c.intermediateSize
        ffProj = try Linear(s.child("ff").child("net").child("0").child("proj"), in: d, out: 2 * inner, bias: bias)
        ffOut = try Linear(s.child("ff").child("net").child("2"), in: inner, out: d, bias: bias)
    }

    func callAsFunction(
        _ x: [Float], batch: Int, tokens: Int, kv: (k: [Float], v: [Float]), adaLN: LayerModulation,
        textLength: Int
    ) -> [Float] {
        var h = x
        var out = attn1(
            selfAttention: norm1(h, batch: batch, tokens: tokens, modulation: adaLN.norm1), batch: batch,
            tokens: tokens)
        Ops.add(&out, h)
        h = out
        out = attn2(
            norm2(h, batch: batch, tokens: tokens, modulation: adaLN.norm2), batch: batch, queries: tokens,
            k: kv.k, v: kv.v, keys: textLength)
        Ops.add(&out, h)
        h = out
        let projected = ffProj(norm3(h, batch: batch, tokens: tokens, modulation: adaLN.norm3), rows: batch * tokens)
        out = ffOut(Self.geglu(projected, rows: batch * tokens, inner: inner), rows: batch * tokens)
        Ops.add(&out, h)
        return out
    }

    /// GEGLU: the first half of ff.net.0.proj's output is the linear branch, the second goes through exact GELU.
    static func geglu(_ projected: [Float], rows: Int, inner n: Int) -> [Float] {
        var gated = [Float](repeating: 0, count: rows * n)
        projected.withUnsafeBufferPointer { p in
            gated.withUnsafeMutableBufferPointer { g in
                let src = UncheckedSendablePointer(p.baseAddress!), shared = SharedPointer(g.baseAddress!)
                Parallel.chunks(rows, cost: n * 30) { range in
                    for r in range {
                        let a = src.p + r * 2 * n, gate = a + n, o = shared.p + r * n
                        o.update(from: gate, count: n)
                        FastMath.apply(o, n, .gelu)
                        for i in 0..<n { o[i] *= a[i] }
                    }
                }
            }
        }
        return gated
    }
}

/// A read-only pointer shared by the chunks of one parallel loop.
struct UncheckedSendablePointer: @unchecked Sendable {
    let p: UnsafePointer<Float>
    init(_ p: UnsafePointer<Float>) { self.p = p }
}

/// `UVitBlock`: optional 2×2 downsample, `num_res_blocks` × (ConvNextBlock → SkipFFTransformerBlock), optional
/// 2×2 transposed-convolution upsample.
struct UVitBlock: Sendable {
    let downNorm: RMSNorm?
    let downConv: Param?
    let downBias: Param?
    let resBlocks: [ConvNextBlock]
    let attentionBlocks: [SkipFFTransformerBlock]
    let upNorm: RMSNorm?
    let upConv: Param?
    let upBias: Param?
    let channels: Int

    init(_ s: ParameterScope, config c: UVit2DConfig, downsample: Bool, upsample: Bool) throws(ModelError) {
        let ch = c.blockOutChannels
        channels = ch
        /// The RMSNorm and 2×2 convolution of `downsample` / `upsample` (Conv2d weights are (out, in, kH, kW),
        /// ConvTranspose2d's (in, out, kH, kW): both [ch, ch, 2, 2] here).
        func resample(_ name: String) throws(ModelError) -> (RMSNorm, Param, Param?) {
            (
                try RMSNorm(s.child(name).child("norm"), dim: ch, eps: c.layerNormEps, affine: c.lnElementwiseAffine),
                try s.child(name).child("conv").param("weight", [ch, ch, 2, 2], use: .conv),
                try s.child(name).child("conv").param("bias", [ch], if: c.useBias)
            )
        }
        (downNorm, downConv, downBias) = downsample ? try resample("downsample") : (nil, nil, nil)
        var res: [ConvNextBlock] = [], attn: [SkipFFTransformerBlock] = []
        for i in 0..<c.numResBlocks {
            res.append(try ConvNextBlock(s.child("res_blocks").child("\(i)"), config: c))
            attn.append(try SkipFFTransformerBlock(s.child("attention_blocks").child("\(i)"), config: c))
        }
        resBlocks = res
        attentionBlocks = attn
        (upNorm, upConv, upBias) = upsample ? try resample("upsample") : (nil, nil, nil)
    }

    func keysAndValues(_ e: [Float], batch: Int, length: Int) -> [[(k: [Float], v: [Float])]] {
        attentionBlocks.map { $0.keysAndValues(e, rows: batch * length) }
    }

    /// The block's optional 2×2 downsampling (the input unchanged without it).
    func downsampled(_ input: [Float], batch: Int, height: inout Int, width: inout Int) -> [Float] {
        guard let downNorm, let downConv else { return input }
        // Downsample2D pads right/bottom by one before its k2/s2 conv; for even sizes the pad is never read.
        var x = input
        downNorm(&x)
        var y = [Float](repeating: 0, count: batch * (height / 2) * (width / 2) * channels)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                downConv.withFloats { w in
                    Kernels.conv2x2Stride2NHWC(
                        input: xp.baseAddress!, batch: batch, height: height, width: width,
                        channels: channels, weight: w, outChannels: channels,
                        bias: downBias?.p, output: yp.baseAddress!)
                }
            }
        }
        height /= 2
        width /= 2
        return y
    }

    func callAsFunction(
        _ input: [Float], batch: Int, height: inout Int, width: inout Int,
        kv: [[(k: [Float], v: [Float])]], adaLN: [[Float]], textLength: Int, trace: Trace?,
        name: String
    ) -> [Float] {
        var x = downsampled(input, batch: batch, height: &height, width: &width)
        if downNorm != nil { trace?.record("\(name).downsample", x, [batch, height, width, channels]) }
        for i in 0..<resBlocks.count {
            x = resBlocks[i](x, batch: batch, height: height, width: width, modulation: adaLN[i])
            trace?.record("\(name).res_blocks.\(i)", x, [batch, height, width, channels])
            x = attentionBlocks[i](x, batch: batch, tokens: height * width, kv: kv[i], textLength: textLength)
            trace?.record("\(name).attention_blocks.\(i)", x, [batch, height, width, channels])
        }
        x = upsampled(x, batch: batch, height: &height, width: &width)
        if upNorm != nil { trace?.record("\(name).upsample", x, [batch, height, width, channels]) }
        return x
    }

    /// The block's optional RMSNorm + 2×2 stride-2 transposed convolution (the input unchanged without it).
    func upsampled(_ input: [Float], batch: Int, height: inout Int, width: inout Int) -> [Float] {
        guard let upNorm, let upConv else { return input }
        var x = input
        upNorm(&x)
        var y = [Float](repeating: 0, count: batch * height * width * 4 * channels)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                upConv.withFloats { w in
                    Kernels.convTranspose2x2Stride2NHWC(
                        input: xp.baseAddress!, batch: batch, height: height, width: width,
                        channels: channels, weight: w, outChannels: channels,
                        bias: upBias?.p, output: yp.baseAddress!)
                }
            }
        }
        height *= 2
        width *= 2
        return y
    }
}

/// `ConvNextBlock`: depthwise 3×3 → RMSNorm → Linear ×4 → GELU → GlobalResponseNorm → Linear → + residual, then
/// AdaLN applied after the residual (docs/model-notes.md §9.3): x·(1 + scale) + shift per channel.
struct ConvNextBlock: Sendable {
    let depthwise: Param
    let depthwiseBias: Param?
    let norm: RMSNorm
    let linear1: Linear
    let grnGamma: Param
    let grnBeta: Param
    let linear2: Linear
    let condMapper: Linear
    let channels: Int

    init(_ s: ParameterScope, config c: UVit2DConfig) throws(ModelError) {
        let ch = c.blockOutChannels
        channels = ch
        depthwise = try s.child("depthwise").param("weight", [ch, 1, 3, 3])
        depthwiseBias = try s.child("depthwise").param("bias", [ch], if: c.useBias)
        norm = try RMSNorm(s.child("norm"), dim: ch, eps: c.layerNormEps, affine: c.lnElementwiseAffine)
        linear1 = try Linear(s.child("channelwise_linear_1"), in: ch, out: 4 * ch, bias: c.useBias)
        grnGamma = try s.child("channelwise_norm").param("gamma", [1, 1, 1, 4 * ch])
        grnBeta = try s.child("channelwise_norm").param("beta", [1, 1, 1, 4 * ch])
        linear2 = try Linear(s.child("channelwise_linear_2"), in: 4 * ch, out: ch, bias: c.useBias)
        condMapper = try Linear(s.child("cond_embeds_mapper"), in: c.hiddenSize, out: 2 * ch, bias: c.useBias)
    }

    /// The depthwise 3×3 convolution (with its bias) over NHWC rows: the block's first step, in inference and training.
    func depthwiseConvolution(_ x: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                Kernels.depthwiseConv3x3NHWC(
                    input: xp.baseAddress!, batch: batch, height: height, width: width,
                    channels: channels, weight: depthwise.p, bias: depthwiseBias?.p,
                    output: yp.baseAddress!)
            }
        }
        return y
    }

    func callAsFunction(_ x: [Float], batch: Int, height: Int, width: Int, modulation: [Float]) -> [Float] {
        let ch = channels, tokens = height * width
        var y = depthwiseConvolution(x, batch: batch, height: height, width: width)
        norm(&y)
        var h = linear1(y, rows: batch * tokens)
        h.withUnsafeMutableBufferPointer { Kernels.gelu($0.baseAddress!, count: $0.count) }
        _ = responseNormalize(&h, batch: batch, tokens: tokens)
        var out = linear2(h, rows: batch * tokens)
        for b in 0..<batch {
            let scale = b * 2 * ch, shift = scale + ch
            for t in 0..<tokens {
                let row = (b * tokens + t) * ch
                for i in 0..<ch {
                    out[row + i] = (out[row + i] + x[row + i]) * (1 + modulation[scale + i]) + modulation[shift + i]
                }
            }
        }
        return out
    }
}

extension ConvNextBlock {
    /// GlobalResponseNorm in place: G = L2 norm over the spatial dims per channel; N = G / (mean_c G + 1e-6);
    /// y = gamma·(x·N) + beta + x. Returns G per batch item and its mean (what the backward pass needs).
    func responseNormalize(_ h: inout [Float], batch: Int, tokens: Int) -> (norms: [[Float]], means: [Float]) {
        let wide = 4 * channels
        var norms: [[Float]] = [], means: [Float] = []
        h.withUnsafeMutableBufferPointer { hp in
            let h = hp.baseAddress!
            for b in 0..<batch {
                var g = [Float](repeating: 0, count: wide)
                // Channels split over the cores; each channel still sums its tokens in order (bit-identical).
                g.withUnsafeMutableBufferPointer { gp in
                    let g = gp.baseAddress!
                    Parallel.chunks(wide, cost: 2 * tokens) { channels in
                        for t in 0..<tokens {
                            let row = h + (b * tokens + t) * wide
                            for i in channels { g[i] += row[i] * row[i] }
                        }
                    }
                }
                var mean: Float = 0
                for i in 0..<wide {
                    g[i] = g[i].squareRoot()
                    mean += g[i]
                }
                mean /= Float(wide)
                norms.append(g)
                means.append(mean)
                g.withUnsafeBufferPointer { gp in
                    let g = gp.baseAddress!, gamma = grnGamma.p, beta = grnBeta.p
                    Parallel.chunks(tokens, cost: 4 * wide) { rows in
                        for t in rows {
                            let row = h + (b * tokens + t) * wide
                            for i in 0..<wide {
                                let v = row[i]
                                row[i] = gamma[i] * (v * (g[i] / (mean + 1e-6))) + beta[i] + v
                            }
                        }
                    }
                }
            }
        }
        return (norms, means)
    }
}

/// `SkipFFTransformerBlock`: two attentions, no feed-forward. Both attn1 and attn2 are cross-attentions to the
/// text (model notes §9.4, as in the original: "this is actually a cross attention layer"). The text goes through
/// SiLU → kv_mapper only when hidden_size ≠ block_out_channels; otherwise the projected text is used directly
/// (docs/model-notes.md §9.14). norm1/norm2 always have a gain and eps 1e-6, whatever ln_elementwise_affine says.
struct SkipFFTransformerBlock: Sendable {
    let kvMapper: Linear?
    let norm1: RMSNorm
    let attn1: MultiHeadAttention
    let norm2: RMSNorm
    let attn2: MultiHeadAttention

    init(_ s: ParameterScope, config c: UVit2DConfig) throws(ModelError) {
        let ch = c.blockOutChannels, heads = c.blockNumHeads
        kvMapper =
            c.hiddenSize != ch
            ? try Linear(s.child("kv_mapper"), in: c.hiddenSize, out: ch, bias: c.useBias) : nil
        norm1 = try RMSNorm(s.child("norm1"), dim: ch, eps: 1e-6, affine: true)
        attn1 = try MultiHeadAttention(
            s.child("attn1"), queryDim: ch, contextDim: ch, heads: heads, headDim: ch / heads,
            bias: c.useBias, outBias: c.useBias)
        norm2 = try RMSNorm(s.child("norm2"), dim: ch, eps: 1e-6, affine: true)
        attn2 = try MultiHeadAttention(
            s.child("attn2"), queryDim: ch, contextDim: ch, heads: heads, headDim: ch / heads,
            bias: c.useBias, outBias: c.useBias)
    }

    /// K/V of attn1 and attn2 over the (mapped) text, flattened as [k1, v1, k2, v2] pairs.
    func keysAndValues(_ e: [Float], rows: Int) -> [(k: [Float], v: [Float])] {
        let context = kvMapper.map { $0(Ops.silu(e), rows: rows) } ?? e
        return [attn1.keysAndValues(context, rows: rows), attn2.keysAndValues(context, rows: rows)]
    }

    func callAsFunction(_ x: [Float], batch: Int, tokens: Int, kv: [(k: [Float], v: [Float])], textLength: Int)
        -> [Float]
    {
        var n = x
        norm1(&n)
        var h = attn1(n, batch: batch, queries: tokens, k: kv[0].k, v: kv[0].v, keys: textLength)
        Ops.add(&h, x)
        n = h
        norm2(&n)
        var out = attn2(n, batch: batch, queries: tokens, k: kv[1].k, v: kv[1].v, keys: textLength)
        Ops.add(&out, h)
        return out
    }
}
