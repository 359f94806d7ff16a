// port of diffusers/models/autoencoders/vq_model.py + vae.py (Encoder, Decoder, VectorQuantizer), v0.35.2
//
// Images are NCHW float32 in [0, 1] (aMUSEd's VQ works in [0, 1], no [-1, 1] normalisation: docs/model-notes.md §3).

import AmusedKernels

/// The VQ-GAN's config (`vqvae/config.json`); defaults are diffusers' `VQModel` defaults.
public struct VQModelConfig: Sendable, Equatable {
    /// Image channels in.
    public var inChannels = 3
    /// Image channels out.
    public var outChannels = 3
    /// Channels per level, finest first.
    public var blockOutChannels = [64]
    /// Resnets per encoder block (decoder blocks have one more).
    public var layersPerBlock = 1
    /// Encoder output channels.
    public var latentChannels = 3
    /// Codebook size.
    public var numVqEmbeddings = 256
    /// Codebook vector width (nil: latent_channels).
    public var vqEmbedDim: Int? = nil
    /// GroupNorm groups.
    public var normNumGroups = 32
    /// Whether the mid blocks have a spatial self-attention.
    public var midBlockAddAttention = true
    /// Whether `decode` takes codebook indices.
    public var lookupFromCodebook = false

    /// The diffusers defaults.
    public init() {}

    /// The codebook vector width.
    public var embedDim: Int { vqEmbedDim ?? latentChannels }
    /// Pixels per token along each side: 2^(levels − 1).
    public var scaleFactor: Int { 1 << (blockOutChannels.count - 1) }
}

/// VQModel: Encoder → quant_conv → nearest codebook entry; codebook lookup → post_quant_conv → Decoder.
public struct VQModel: Sendable {
    /// The config the graph was built from.
    public let config: VQModelConfig
    let encoderConvIn: Conv2d
    let downBlocks: [(resnets: [ResnetBlock2D], downsample: Conv2d?)]
    let encoderMid: MidBlock2D
    let encoderNormOut: GroupNorm
    let encoderConvOut: Conv2d
    let quantConv: Conv2d
    let codebook: Param
    let postQuantConv: Conv2d
    let decoderConvIn: Conv2d
    let decoderMid: MidBlock2D
    let upBlocks: [(resnets: [ResnetBlock2D], upsample: Conv2d?)]
    let decoderNormOut: GroupNorm
    let decoderConvOut: Conv2d

    /// Builds the graph; parameters come from `scope` (diffusers names).
    public init(config c: VQModelConfig, scope s: ParameterScope) throws(ModelError) {
        guard !c.blockOutChannels.isEmpty else { throw .invalidConfig("block_out_channels is empty") }
        guard c.embedDim == c.latentChannels else {
            throw .invalidConfig("vq_embed_dim (\(c.embedDim)) must equal latent_channels (\(c.latentChannels))")
        }
        config = c
        let groups = c.normNumGroups, channels = c.blockOutChannels
        let enc = s.child("encoder")
        encoderConvIn = try Conv2d(
            enc.child("conv_in"), in: c.inChannels, out: channels[0], kernel: 3,
            padding: .same(1), bias: true)
        var down: [(resnets: [ResnetBlock2D], downsample: Conv2d?)] = []
        var previous = channels[0]
        for (i, out) in channels.enumerated() {
            let block = enc.child("down_blocks").child("\(i)")
            var resnets: [ResnetBlock2D] = []
            for j in 0..<c.layersPerBlock {
                resnets.append(
                    try ResnetBlock2D(
                        block.child("resnets").child("\(j)"), in: j == 0 ? previous : out,
                        out: out, groups: groups))
            }
            // Downsample2D(padding=0): zero-pad right and bottom by one, then a 3×3 stride-2 conv (taming style).
            let downsample =
                i < channels.count - 1
                ? try Conv2d(
                    block.child("downsamplers").child("0").child("conv"), in: out, out: out, kernel: 3,
                    stride: 2, padding: Kernels.Padding(top: 0, left: 0, bottom: 1, right: 1), bias: true)
                : nil
            down.append((resnets, downsample))
            previous = out
        }
        downBlocks = down
        let top = channels.last!
        encoderMid = try MidBlock2D(
            enc.child("mid_block"), channels: top, groups: groups,
            attention: c.midBlockAddAttention)
        encoderNormOut = try GroupNorm(enc.child("conv_norm_out"), channels: top, groups: groups, eps: 1e-6)
        encoderConvOut = try Conv2d(
            enc.child("conv_out"), in: top, out: c.latentChannels, kernel: 3, padding: .same(1),
            bias: true)
        quantConv = try Conv2d(s.child("quant_conv"), in: c.latentChannels, out: c.embedDim, kernel: 1, bias: true)
        codebook = try s.child("quantize").child("embedding").param("weight", [c.numVqEmbeddings, c.embedDim])
        postQuantConv = try Conv2d(
            s.child("post_quant_conv"), in: c.embedDim, out: c.latentChannels, kernel: 1,
            bias: true)
        let dec = s.child("decoder")
        decoderConvIn = try Conv2d(
            dec.child("conv_in"), in: c.latentChannels, out: top, kernel: 3, padding: .same(1),
            bias: true)
        decoderMid = try MidBlock2D(
            dec.child("mid_block"), channels: top, groups: groups,
            attention: c.midBlockAddAttention)
        var up: [(resnets: [ResnetBlock2D], upsample: Conv2d?)] = []
        let reversed = Array(channels.reversed())
        previous = reversed[0]
        for (i, out) in reversed.enumerated() {
            let block = dec.child("up_blocks").child("\(i)")
            var resnets: [ResnetBlock2D] = []
            for j in 0...c.layersPerBlock {  // decoder blocks have layers_per_block + 1 resnets
                resnets.append(
                    try ResnetBlock2D(
                        block.child("resnets").child("\(j)"), in: j == 0 ? previous : out,
                        out: out, groups: groups))
            }
            // Upsample2D: nearest ×2, then a 3×3 conv with padding 1.
            let upsample =
                i < reversed.count - 1
                ? try Conv2d(
                    block.child("upsamplers").child("0").child("conv"), in: out, out: out, kernel: 3,
                    padding: .same(1), bias: true)
                : nil
            up.append((resnets, upsample))
            previous = out
        }
        upBlocks = up
        decoderNormOut = try GroupNorm(dec.child("conv_norm_out"), channels: channels[0], groups: groups, eps: 1e-6)
        decoderConvOut = try Conv2d(
            dec.child("conv_out"), in: channels[0], out: c.outChannels, kernel: 3,
            padding: .same(1), bias: true)
    }

    /// Every parameter the config implies, in declaration order.
    public static func parameterSpecs(_ config: VQModelConfig) throws(ModelError) -> [ParameterSpec] {
        let scope = ParameterScope.collecting()
        _ = try VQModel(config: config, scope: scope)
        return scope.specs
    }

    /// Token ids [B, h, w] for images [B, in_channels, H, W] in [0, 1] (H, W multiples of the scale factor).
    public func encode(_ images: [Float], batch: Int, height: Int, width: Int, trace: Trace? = nil)
        throws(ModelError) -> [Int64]
    {
        let f = config.scaleFactor
        guard images.count == batch * config.inChannels * height * width, height % f == 0, width % f == 0 else {
            throw .invalidInput("images must be [\(batch), \(config.inChannels), H, W] with H, W multiples of \(f)")
        }
        var (x, h, w) = encoderConvIn(images, batch: batch, height: height, width: width)
        for (i, block) in downBlocks.enumerated() {
            for r in block.resnets { x = r(x, batch: batch, height: h, width: w) }
            if let d = block.downsample { (x, h, w) = d(x, batch: batch, height: h, width: w) }
            trace?.record("encoder.down_blocks.\(i)", x, [batch, block.resnets.last!.outChannels, h, w])
        }
        x = encoderMid(x, batch: batch, height: h, width: w)
        encoderNormOut(&x, batch: batch, spatial: h * w, silu: true)
        (x, _, _) = encoderConvOut(x, batch: batch, height: h, width: w)
        (x, _, _) = quantConv(x, batch: batch, height: h, width: w)
        trace?.record("latents", x, [batch, config.embedDim, h, w])
        return nearestCodes(x, batch: batch, spatial: h * w)
    }

    /// The index of the nearest codebook vector for every latent position (first index on ties). Like torch.cdist
    /// for these sizes, the distance is computed in the matrix-product form ‖x‖² + ‖e‖² − 2x·e, clamped at zero and
    /// square-rooted, so that near-ties resolve as the reference resolves them.
    func nearestCodes(_ latents: [Float], batch: Int, spatial: Int) -> [Int64] {
        let d = config.embedDim, n = config.numVqEmbeddings
        let z = Ops.toNHWC(latents, batch: batch, channels: d, spatial: spatial)
        let rows = batch * spatial
        var dot = [Float](repeating: 0, count: rows * n)
        z.withUnsafeBufferPointer { zp in
            dot.withUnsafeMutableBufferPointer { dp in
                Kernels.sgemm(
                    m: rows, n: n, k: d, a: zp.baseAddress!, lda: d, b: codebook.p, ldb: d, transposeB: true,
                    c: dp.baseAddress!, ldc: n, alpha: -2)
            }
        }
        var codeNorms = [Float](repeating: 0, count: n)
        for j in 0..<n { for i in 0..<d { codeNorms[j] += codebook.p[j * d + i] * codebook.p[j * d + i] } }
        var ids = [Int64](repeating: 0, count: rows)
        for r in 0..<rows {
            var xNorm: Float = 0
            for i in 0..<d { xNorm += z[r * d + i] * z[r * d + i] }
            var best = 0
            var bestDistance = Float.infinity
            for j in 0..<n {
                let distance = max(dot[r * n + j] + xNorm + codeNorms[j], 0).squareRoot()
                if distance < bestDistance {
                    bestDistance = distance
                    best = j
                }
            }
            ids[r] = Int64(best)
        }
        return ids
    }

    /// Images [B, out_channels, h·f, w·f] clipped to [0, 1] from token ids [B, h, w] (codebook lookup).
    public func decode(_ ids: [Int64], batch: Int, height h: Int, width w: Int, trace: Trace? = nil)
        throws(ModelError) -> [Float]
    {
        let d = config.embedDim
        guard ids.count == batch * h * w else {
            throw .invalidInput("\(ids.count) ids for batch \(batch) of \(h)×\(w)")
        }
        if let bad = ids.first(where: { $0 < 0 || $0 >= Int64(config.numVqEmbeddings) }) {
            throw .invalidInput("code \(bad) is outside the codebook of \(config.numVqEmbeddings)")
        }
        // get_codebook_entry: embedding lookup (B, h, w, D) → NCHW.
        var z = [Float](repeating: 0, count: batch * d * h * w)
        for b in 0..<batch {
            for p in 0..<(h * w) {
                let code = Int(ids[b * h * w + p])
                for i in 0..<d { z[(b * d + i) * h * w + p] = codebook.p[code * d + i] }
            }
        }
        var (x, hh, ww) = postQuantConv(z, batch: batch, height: h, width: w)
        (x, hh, ww) = decoderConvIn(x, batch: batch, height: hh, width: ww)
        x = decoderMid(x, batch: batch, height: hh, width: ww)
        trace?.record("decoder.mid_block", x, [batch, config.blockOutChannels.last!, hh, ww])
        for (i, block) in upBlocks.enumerated() {
            for r in block.resnets { x = r(x, batch: batch, height: hh, width: ww) }
            if let u = block.upsample {
                let ch = block.resnets.last!.outChannels
                var up = [Float](repeating: 0, count: batch * ch * 4 * hh * ww)
                x.withUnsafeBufferPointer { xp in
                    up.withUnsafeMutableBufferPointer { up in
                        for b in 0..<batch {
                            Kernels.upsampleNearest2x(
                                input: xp.baseAddress! + b * ch * hh * ww, channels: ch, height: hh,
                                width: ww, output: up.baseAddress! + b * ch * 4 * hh * ww)
                        }
                    }
                }
                (x, hh, ww) = u(up, batch: batch, height: 2 * hh, width: 2 * ww)
            }
            trace?.record("decoder.up_blocks.\(i)", x, [batch, block.resnets.last!.outChannels, hh, ww])
        }
        decoderNormOut(&x, batch: batch, spatial: hh * ww, silu: true)
        (x, _, _) = decoderConvOut(x, batch: batch, height: hh, width: ww)
        for i in x.indices { x[i] = min(max(x[i], 0), 1) }
        return x
    }
}

/// `ResnetBlock2D` without time embedding: GroupNorm → SiLU → conv3×3 → GroupNorm → SiLU → conv3×3, plus the
/// input (through a 1×1 `conv_shortcut` when the channel count changes); output scale 1.
struct ResnetBlock2D: Sendable {
    let norm1: GroupNorm
    let conv1: Conv2d
    let norm2: GroupNorm
    let conv2: Conv2d
    let shortcut: Conv2d?
    let outChannels: Int

    init(_ s: ParameterScope, in i: Int, out o: Int, groups: Int) throws(ModelError) {
        norm1 = try GroupNorm(s.child("norm1"), channels: i, groups: groups, eps: 1e-6)
        conv1 = try Conv2d(s.child("conv1"), in: i, out: o, kernel: 3, padding: .same(1), bias: true)
        norm2 = try GroupNorm(s.child("norm2"), channels: o, groups: groups, eps: 1e-6)
        conv2 = try Conv2d(s.child("conv2"), in: o, out: o, kernel: 3, padding: .same(1), bias: true)
        shortcut = i != o ? try Conv2d(s.child("conv_shortcut"), in: i, out: o, kernel: 1, bias: true) : nil
        outChannels = o
    }

    func callAsFunction(_ x: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var h = x
        norm1(&h, batch: batch, spatial: height * width, silu: true)
        h = conv1(h, batch: batch, height: height, width: width).values
        norm2(&h, batch: batch, spatial: height * width, silu: true)
        h = conv2(h, batch: batch, height: height, width: width).values
        let residual = shortcut.map { $0(x, batch: batch, height: height, width: width).values } ?? x
        Ops.add(&h, residual)
        return h
    }
}

/// `UNetMidBlock2D` as the VQ uses it: resnet, (optional single-head spatial self-attention, resnet).
struct MidBlock2D: Sendable {
    let resnets: [ResnetBlock2D]
    let attention: SpatialAttention?

    init(_ s: ParameterScope, channels: Int, groups: Int, attention: Bool) throws(ModelError) {
        resnets = [
            try ResnetBlock2D(s.child("resnets").child("0"), in: channels, out: channels, groups: groups),
            try ResnetBlock2D(s.child("resnets").child("1"), in: channels, out: channels, groups: groups),
        ]
        self.attention =
            attention
            ? try SpatialAttention(s.child("attentions").child("0"), channels: channels, groups: groups) : nil
    }

    func callAsFunction(_ x: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var h = resnets[0](x, batch: batch, height: height, width: width)
        if let attention { h = attention(h, batch: batch, spatial: height * width) }
        return resnets[1](h, batch: batch, height: height, width: width)
    }
}

/// The mid block's `Attention` (one head of width C, GroupNorm first, biases, residual connection).
struct SpatialAttention: Sendable {
    let groupNorm: GroupNorm
    let attention: MultiHeadAttention
    let channels: Int

    init(_ s: ParameterScope, channels: Int, groups: Int) throws(ModelError) {
        groupNorm = try GroupNorm(s.child("group_norm"), channels: channels, groups: groups, eps: 1e-6)
        attention = try MultiHeadAttention(
            s, queryDim: channels, contextDim: channels, heads: 1, headDim: channels,
            bias: true, outBias: true)
        self.channels = channels
    }

    func callAsFunction(_ x: [Float], batch: Int, spatial: Int) -> [Float] {
        var h = x
        groupNorm(&h, batch: batch, spatial: spatial)
        let tokens = Ops.toNHWC(h, batch: batch, channels: channels, spatial: spatial)
        let out = attention(selfAttention: tokens, batch: batch, tokens: spatial)
        var y = Ops.toNCHW(out, batch: batch, channels: channels, spatial: spatial)
        Ops.add(&y, x)
        return y
    }
}
