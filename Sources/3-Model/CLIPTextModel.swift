// port of transformers/models/clip/modeling_clip.py (CLIPTextModelWithProjection), v4.57.1

import AmusedKernels

/// The text encoder's config (`text_encoder/config.json`); defaults are transformers' `CLIPTextConfig` defaults.
public struct CLIPTextConfig: Sendable, Equatable {
    /// Token vocabulary size.
    public var vocabSize = 49408
    /// Width of the residual stream.
    public var hiddenSize = 512
    /// MLP inner width.
    public var intermediateSize = 2048
    /// Output width of `text_projection`.
    public var projectionDim = 512
    /// Number of encoder layers.
    public var numHiddenLayers = 12
    /// Attention heads per layer.
    public var numAttentionHeads = 8
    /// Learned positions (77).
    public var maxPositionEmbeddings = 77
    /// `quick_gelu` (CLIP) or `gelu` (exact erf).
    public var hiddenAct = "quick_gelu"
    /// LayerNorm epsilon.
    public var layerNormEps: Float = 1e-5
    /// End-of-text id; the legacy value 2 makes pooling use argmax(input_ids) (see `pooledIndex`).
    public var eosTokenId = 49407

    /// The transformers defaults.
    public init() {}
}

/// What the aMUSEd pipelines take from the text encoder.
public struct TextEncoderOutput: Sendable {
    /// `hidden_states[-2]`: the output of the second-to-last layer, before the final LayerNorm, [B, 77, D].
    public var penultimateHiddenStates: [Float]
    /// `text_embeds`: `text_projection` of the pooled token, not normalised, [B, P].
    public var textEmbeds: [Float]
}

/// CLIPTextModelWithProjection: token + position embeddings, pre-LN encoder layers with a causal mask,
/// final LayerNorm, pooling at the end-of-text token, bias-free projection.
public struct CLIPTextModel: Sendable {
    /// The config the graph was built from.
    public let config: CLIPTextConfig
    let tokenEmbedding: Param
    let positionEmbedding: Param
    let layers: [CLIPEncoderLayer]
    let finalLayerNorm: LayerNorm
    let textProjection: Linear

    /// Builds the graph; parameters come from `scope` (transformers names, `text_model.` prefix included).
    public init(config: CLIPTextConfig, scope: ParameterScope) throws(ModelError) {
        guard config.hiddenSize % config.numAttentionHeads == 0 else {
            throw .invalidConfig("hidden_size \(config.hiddenSize) is not divisible by num_attention_heads")
        }
        guard ["quick_gelu", "gelu"].contains(config.hiddenAct) else {
            throw .invalidConfig("hidden_act \(config.hiddenAct) is not supported (quick_gelu, gelu)")
        }
        self.config = config
        let text = scope.child("text_model")
        let embeddings = text.child("embeddings")
        tokenEmbedding = try embeddings.child("token_embedding").param(
            "weight", [config.vocabSize, config.hiddenSize],
            use: .embedding)
        positionEmbedding = try embeddings.child("position_embedding").param(
            "weight", [config.maxPositionEmbeddings, config.hiddenSize], use: .embedding)
        var layers: [CLIPEncoderLayer] = []
        for i in 0..<config.numHiddenLayers {
            layers.append(try CLIPEncoderLayer(text.child("encoder").child("layers").child("\(i)"), config: config))
        }
        self.layers = layers
        finalLayerNorm = try LayerNorm(text.child("final_layer_norm"), dim: config.hiddenSize, eps: config.layerNormEps)
        textProjection = try Linear(
            scope.child("text_projection"), in: config.hiddenSize, out: config.projectionDim,
            bias: false)
    }

    /// Every parameter the config implies, in declaration order.
    public static func parameterSpecs(_ config: CLIPTextConfig) throws(ModelError) -> [ParameterSpec] {
        let scope = ParameterScope.collecting()
        _ = try CLIPTextModel(config: config, scope: scope)
        return scope.specs
    }

    /// The index pooled for `ids`: with the legacy `eos_token_id == 2` transformers pools at argmax(input_ids)
    /// (the first `<|endoftext|>`, the largest id); otherwise at the first position holding `eos_token_id`.
    func pooledIndex(_ ids: ArraySlice<Int64>) -> Int {
        if config.eosTokenId == 2 {
            var best = ids.startIndex
            for i in ids.indices where ids[i] > ids[best] { best = i }
            return best - ids.startIndex
        }
        return (ids.firstIndex(of: Int64(config.eosTokenId)) ?? ids.endIndex - 1) - ids.startIndex
    }

    /// Token + position embeddings [batch·length, hidden] of `batch` rows of ids, after checking them.
    func embeddings(_ ids: [Int64], batch: Int) throws(ModelError) -> (x: [Float], length: Int) {
        guard batch > 0, ids.count % batch == 0 else {
            throw .invalidInput("\(ids.count) ids do not split into \(batch) rows")
        }
        let length = ids.count / batch
        let d = config.hiddenSize
        guard length <= config.maxPositionEmbeddings else {
            throw .invalidInput("\(length) tokens exceed max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        if let bad = ids.first(where: { $0 < 0 || $0 >= Int64(config.vocabSize) }) {
            throw .invalidInput("token id \(bad) is outside the vocabulary of \(config.vocabSize)")
        }
        var x = [Float](repeating: 0, count: batch * length * d)
        var position = [Float](repeating: 0, count: d)
        x.withUnsafeMutableBufferPointer { xp in
            for b in 0..<batch {
                for t in 0..<length {
                    let id = Int(ids[b * length + t]), row = xp.baseAddress! + (b * length + t) * d
                    tokenEmbedding.rows(id..<(id + 1), into: row)
                    position.withUnsafeMutableBufferPointer {
                        positionEmbedding.rows(t..<(t + 1), into: $0.baseAddress!)
                    }
                    for i in 0..<d { row[i] += position[i] }
                }
            }
        }
        return (x, length)
    }

    /// Encodes `batch` rows of token ids (each of any length up to 77, usually 77).
    public func callAsFunction(_ ids: [Int64], batch: Int, trace: Trace? = nil) throws(ModelError) -> TextEncoderOutput
    {
        var (x, length) = try embeddings(ids, batch: batch)
        let d = config.hiddenSize
        trace?.record("text_model.embeddings", x, [batch, length, d])
        let positions = (0..<batch).map { b in pooledIndex(ids[(b * length)..<((b + 1) * length)]) }
        var penultimate = x  // hidden_states[-2] is the embeddings when there is a single layer
        var pooledRows: [Float]?
        for (i, layer) in layers.enumerated() {
            if i == layers.count - 1 {
                penultimate = x
                // Of the last layer only the pooled rows are read (aMUSEd conditions on hidden_states[-2] and the
                // pooled projection), so without a trace only those rows are computed: 1/L of the work for L layers.
                if trace == nil {
                    pooledRows = layer.output(at: positions, x, batch: batch, length: length)
                    break
                }
            }
            x = layer(x, batch: batch, length: length)
            trace?.record("text_model.encoder.layers.\(i)", x, [batch, length, d])
        }
        var pooled =
            pooledRows
            ?? positions.enumerated().flatMap { b, p in x[((b * length + p) * d)..<((b * length + p + 1) * d)] }
        finalLayerNorm(&pooled)
        let embeds = textProjection(pooled, rows: batch)
        trace?.record("text_embeds", embeds, [batch, config.projectionDim])
        return TextEncoderOutput(penultimateHiddenStates: penultimate, textEmbeds: embeds)
    }
}

/// One pre-LN CLIP encoder layer: x + attn(ln1(x)) with a causal mask, then x + mlp(ln2(x)).
struct CLIPEncoderLayer: Sendable {
    let layerNorm1: LayerNorm
    let attention: MultiHeadAttention
    let layerNorm2: LayerNorm
    let fc1: Linear
    let fc2: Linear
    let quickGelu: Bool

    init(_ scope: ParameterScope, config c: CLIPTextConfig) throws(ModelError) {
        layerNorm1 = try LayerNorm(scope.child("layer_norm1"), dim: c.hiddenSize, eps: c.layerNormEps)
        // transformers names the projections q_proj/k_proj/v_proj/out_proj, all with biases.
        let attn = scope.child("self_attn")
        let headDim = c.hiddenSize / c.numAttentionHeads
        attention = MultiHeadAttention(
            toQ: try Linear(attn.child("q_proj"), in: c.hiddenSize, out: c.hiddenSize, bias: true),
            toK: try Linear(attn.child("k_proj"), in: c.hiddenSize, out: c.hiddenSize, bias: true),
            toV: try Linear(attn.child("v_proj"), in: c.hiddenSize, out: c.hiddenSize, bias: true),
            toOut: try Linear(attn.child("out_proj"), in: c.hiddenSize, out: c.hiddenSize, bias: true),
            heads: c.numAttentionHeads, headDim: headDim)
        layerNorm2 = try LayerNorm(scope.child("layer_norm2"), dim: c.hiddenSize, eps: c.layerNormEps)
        fc1 = try Linear(scope.child("mlp").child("fc1"), in: c.hiddenSize, out: c.intermediateSize, bias: true)
        fc2 = try Linear(scope.child("mlp").child("fc2"), in: c.intermediateSize, out: c.hiddenSize, bias: true)
        quickGelu = c.hiddenAct == "quick_gelu"
    }

    func callAsFunction(_ x: [Float], batch: Int, length: Int) -> [Float] {
        var h = x
        layerNorm1(&h)
        var out = attention(selfAttention: h, batch: batch, tokens: length, causal: true)
        Ops.add(&out, x)
        return withMLP(out, rows: batch * length)
    }

    /// x + mlp(ln2(x)) for `rows` rows.
    func withMLP(_ x: [Float], rows: Int) -> [Float] {
        var m = x
        layerNorm2(&m)
        var inner = fc1(m, rows: rows)
        inner.withUnsafeMutableBufferPointer { p in
            if quickGelu {
                Kernels.quickGelu(p.baseAddress!, count: p.count)
            } else {
                Kernels.gelu(p.baseAddress!, count: p.count)
            }
        }
        var y = fc2(inner, rows: rows)
        Ops.add(&y, x)
        return y
    }

    /// The layer's output at one position per row only, [batch, hidden]: under the causal mask position p reads the
    /// keys and values of positions 0…p, so only those are projected, and the rest of the layer runs on one row.
    func output(at positions: [Int], _ x: [Float], batch: Int, length: Int) -> [Float] {
        let d = x.count / (batch * length)
        var attended = [Float](), residual = [Float]()
        attended.reserveCapacity(batch * d)
        residual.reserveCapacity(batch * d)
        for (b, p) in positions.enumerated() {
            let rows = (b * length * d)..<((b * length + p + 1) * d)
            var h = Array(x[rows])
            layerNorm1(&h)
            let (k, v) = attention.keysAndValues(h, rows: p + 1)
            // The one query is the last of the keys, so no mask is needed.
            attended += attention(Array(h[(p * d)...]), batch: 1, queries: 1, k: k, v: v, keys: p + 1)
            residual += x[(rows.upperBound - d)..<rows.upperBound]
        }
        Ops.add(&attended, residual)
        return withMLP(attended, rows: batch)
    }
}
