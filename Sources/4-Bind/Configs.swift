// Component configs, read from the checkpoint's config.json files onto the graph's config types. Keys a class does
// not use are ignored (configs carry bookkeeping such as `_diffusers_version`); a key of the wrong type, or a value
// the graph does not implement, is an error naming the key.

import AmusedModel
import AmusedRead

/// Typed access to a config object, with errors that name the file and key.
struct ConfigReader {
    let object: JSONObject
    let path: String

    init(_ json: JSONValue?, path: String) throws(BindError) {
        guard let json else {
            throw BindError(.config, path: path, "no config for this component (a single-file checkpoint carries none: "
                            + "pass --configs DIR, a diffusers folder of the same model)")
        }
        guard let object = json.objectValue else { throw BindError(.config, path: path, "config is not a JSON object") }
        self.object = object
        self.path = path
    }

    func fail(_ key: String, _ expected: String) -> BindError {
        BindError(.config, path: path, key: key, "expected \(expected), found \(object[key]?.serialized ?? "nothing")")
    }

    /// Largest width, vocabulary, codebook or other size a config may give (aMUSEd's are below 2^16). The graph
    /// multiplies sizes into parameter shapes and divides by head and group counts before any weight is read, so a
    /// size outside 1…2^20 would trap or allocate without bound there instead of failing here.
    static let sizes = 1...(1 << 20)
    /// Layers or blocks a config may ask for (each builds a module before any weight is read).
    static let counts = 0...(1 << 10)
    /// Most resolution levels a VQ config may list (its scale factor is 2^(levels − 1)).
    static let maxLevels = 16

    func int(_ key: String, _ fallback: Int, in range: ClosedRange<Int> = sizes) throws(BindError) -> Int {
        guard let v = object[key], v != .null else { return fallback }
        guard let i = v.intValue else { throw fail(key, "an integer") }
        guard range.contains(i) else { throw fail(key, "an integer in \(range.lowerBound)…\(range.upperBound)") }
        return i
    }

    func optionalInt(_ key: String) throws(BindError) -> Int? {
        guard let v = object[key], v != .null else { return nil }
        guard let i = v.intValue else { throw fail(key, "an integer or null") }
        guard Self.sizes.contains(i) else { throw fail(key, "null or an integer in 1…\(Self.sizes.upperBound)") }
        return i
    }

    func float(_ key: String, _ fallback: Float) throws(BindError) -> Float {
        guard let v = object[key], v != .null else { return fallback }
        guard let d = v.doubleValue else { throw fail(key, "a number") }
        return Float(d)
    }

    func bool(_ key: String, _ fallback: Bool) throws(BindError) -> Bool {
        guard let v = object[key], v != .null else { return fallback }
        guard let b = v.boolValue else { throw fail(key, "true or false") }
        return b
    }

    func string(_ key: String, _ fallback: String) throws(BindError) -> String {
        guard let v = object[key], v != .null else { return fallback }
        guard let s = v.stringValue else { throw fail(key, "a string") }
        return s
    }

    func ints(_ key: String, _ fallback: [Int], in range: ClosedRange<Int> = sizes) throws(BindError) -> [Int] {
        guard let v = object[key], v != .null else { return fallback }
        guard let a = v.arrayValue, a.count <= Self.maxLevels, a.allSatisfy({ $0.intValue.map(range.contains) == true })
        else {
            throw fail(key, "a list of at most \(Self.maxLevels) integers in \(range.lowerBound)…\(range.upperBound)")
        }
        return a.map { $0.intValue! }
    }

    func strings(_ key: String, _ fallback: [String]) throws(BindError) -> [String] {
        guard let v = object[key], v != .null else { return fallback }
        guard let a = v.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else { throw fail(key, "a list of strings") }
        return a.map { $0.stringValue! }
    }

    func require(_ key: String, _ value: String, oneOf allowed: [String]) throws(BindError) {
        guard allowed.contains(value) else {
            throw BindError(.config, path: path, key: key,
                            "\"\(value)\" is not implemented (supported: \(allowed.joined(separator: ", ")))")
        }
    }
}

extension UVit2DConfig {
    /// Reads a diffusers `UVit2DModel` config.
    public init(json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        self.init()
        hiddenSize = try r.int("hidden_size", hiddenSize)
        useBias = try r.bool("use_bias", useBias)
        condEmbedDim = try r.int("cond_embed_dim", condEmbedDim)
        microCondEncodeDim = try r.int("micro_cond_encode_dim", microCondEncodeDim)
        microCondEmbedDim = try r.int("micro_cond_embed_dim", microCondEmbedDim)
        encoderHiddenSize = try r.int("encoder_hidden_size", encoderHiddenSize)
        vocabSize = try r.int("vocab_size", vocabSize)
        codebookSize = try r.int("codebook_size", codebookSize)
        inChannels = try r.int("in_channels", inChannels)
        blockOutChannels = try r.int("block_out_channels", blockOutChannels)
        numResBlocks = try r.int("num_res_blocks", numResBlocks, in: ConfigReader.counts)
        downsample = try r.bool("downsample", downsample)
        upsample = try r.bool("upsample", upsample)
        blockNumHeads = try r.int("block_num_heads", blockNumHeads)
        numHiddenLayers = try r.int("num_hidden_layers", numHiddenLayers, in: ConfigReader.counts)
        numAttentionHeads = try r.int("num_attention_heads", numAttentionHeads)
        intermediateSize = try r.int("intermediate_size", intermediateSize)
        layerNormEps = try r.float("layer_norm_eps", layerNormEps)
        lnElementwiseAffine = try r.bool("ln_elementwise_affine", lnElementwiseAffine)
        sampleSize = try r.int("sample_size", sampleSize)
    }
}

extension VQModelConfig {
    /// Reads a diffusers `VQModel` config.
    public init(json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        self.init()
        inChannels = try r.int("in_channels", inChannels)
        outChannels = try r.int("out_channels", outChannels)
        blockOutChannels = try r.ints("block_out_channels", blockOutChannels)
        layersPerBlock = try r.int("layers_per_block", layersPerBlock, in: ConfigReader.counts)
        latentChannels = try r.int("latent_channels", latentChannels)
        numVqEmbeddings = try r.int("num_vq_embeddings", numVqEmbeddings)
        vqEmbedDim = try r.optionalInt("vq_embed_dim")
        normNumGroups = try r.int("norm_num_groups", normNumGroups)
        midBlockAddAttention = try r.bool("mid_block_add_attention", midBlockAddAttention)
        lookupFromCodebook = try r.bool("lookup_from_codebook", lookupFromCodebook)
        try r.require("act_fn", try r.string("act_fn", "silu"), oneOf: ["silu"])
        try r.require("norm_type", try r.string("norm_type", "group"), oneOf: ["group"])
        for (key, kind) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            let types = try r.strings(key, [kind])
            for t in types { try r.require(key, t, oneOf: [kind]) }
            guard types.count == blockOutChannels.count else {
                throw BindError(.config, path: path, key: key,
                                "\(types.count) block types for \(blockOutChannels.count) block_out_channels")
            }
        }
    }
}

extension CLIPTextConfig {
    /// Reads a transformers `CLIPTextConfig` (accepts both `torch_dtype` and `dtype`, ignores both: compute is float32).
    public init(json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        self.init()
        vocabSize = try r.int("vocab_size", vocabSize)
        hiddenSize = try r.int("hidden_size", hiddenSize)
        intermediateSize = try r.int("intermediate_size", intermediateSize)
        projectionDim = try r.int("projection_dim", projectionDim)
        numHiddenLayers = try r.int("num_hidden_layers", numHiddenLayers, in: ConfigReader.counts)
        numAttentionHeads = try r.int("num_attention_heads", numAttentionHeads)
        maxPositionEmbeddings = try r.int("max_position_embeddings", maxPositionEmbeddings)
        hiddenAct = try r.string("hidden_act", hiddenAct)
        try r.require("hidden_act", hiddenAct, oneOf: ["quick_gelu", "gelu"])
        layerNormEps = try r.float("layer_norm_eps", layerNormEps)
        eosTokenId = try r.int("eos_token_id", eosTokenId, in: Int.min...Int.max)  // only compared with ids
    }
}

extension UVit2DConfig {
    /// Translates an open-muse `MaskGiTUViT_v2` config as diffusers' convert_amused.py does: the same keys by name,
    /// `block_out_channels` from its one-element list, `downsample = upsample = force_down_up_sample`.
    public init(openMuse json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        // block_out_channels is a one-element list in open-muse; the rest shares diffusers' names.
        var translated = JSONObject()
        for (key, value) in r.object.entries {
            translated.insert(key, key == "block_out_channels" ? (value.arrayValue?.first ?? value) : value)
        }
        try self.init(json: .object(translated), path: path)
        downsample = try r.bool("force_down_up_sample", false)
        upsample = downsample
        sampleSize = try r.int("sample_size", downsample ? 32 : 16)
    }
}

extension VQModelConfig {
    /// Translates an open-muse / taming `VQGANModel` config: `hidden_channels × channel_mult` per level,
    /// `num_res_blocks`, `z_channels`, `quantized_embed_dim`, `num_embeddings`, `no_attn_mid_block`.
    /// (`norm_num_groups` is not an open-muse key — it hard-codes 32 — but is honoured when present.)
    public init(taming json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        self.init()
        let hidden = try r.int("hidden_channels", 128)
        blockOutChannels = []
        for m in try r.ints("channel_mult", [1, 2, 2, 4, 6]) {
            // Both factors are at most 2^20, so the product fits; it must be a size too.
            guard ConfigReader.sizes.contains(m * hidden) else {
                throw BindError(.config, path: path, key: "channel_mult",
                                "hidden_channels \(hidden) × \(m) is outside 1…\(ConfigReader.sizes.upperBound)")
            }
            blockOutChannels.append(m * hidden)
        }
        layersPerBlock = try r.int("num_res_blocks", 2, in: ConfigReader.counts)
        latentChannels = try r.int("z_channels", 64)
        vqEmbedDim = try r.optionalInt("quantized_embed_dim")
        numVqEmbeddings = try r.int("num_embeddings", 8192)
        midBlockAddAttention = !(try r.bool("no_attn_mid_block", false))
        normNumGroups = try r.int("norm_num_groups", 32)
        inChannels = try r.int("num_channels", 3)
        outChannels = inChannels
        lookupFromCodebook = true
        guard try r.ints("attn_resolutions", [], in: Int.min...Int.max).isEmpty else {
            throw BindError(.config, path: path, key: "attn_resolutions", "attention inside the VQ levels is not implemented")
        }
    }
}
