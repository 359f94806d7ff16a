// Component configs, read from the checkpoint's config.json files onto the graph's config types, and written back in
// diffusers' schema, both from one table of keys per class. Keys a class does not use are ignored (configs carry
// bookkeeping such as `_diffusers_version`); a key of the wrong type, or a value the graph does not implement, is an
// error naming the key.

import AmusedModel
import AmusedRead

/// Typed access to a config object, with errors that name the file and key.
struct ConfigReader {
    let object: JSONObject
    let path: String

    init(_ json: JSONValue?, path: String) throws(BindError) {
        guard let json else {
            throw BindError(
                .config, path: path,
                "no config for this component (a single-file checkpoint carries none: "
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
        guard let a = v.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else {
            throw fail(key, "a list of strings")
        }
        return a.map { $0.stringValue! }
    }

    func require(_ key: String, _ value: String, oneOf allowed: [String]) throws(BindError) {
        guard allowed.contains(value) else {
            throw BindError(
                .config, path: path, key: key,
                "\"\(value)\" is not implemented (supported: \(allowed.joined(separator: ", ")))")
        }
    }
}

/// One key of a diffusers config: the graph property it fills, how it is read (and checked), and how the canonical
/// config writes it back. The tables below (`diffusersFields`) are the only place these keys are spelled: reading a
/// config.json and writing one (the diffusers-folder export, bundle manifests) both go through them.
struct ConfigField<Config>: Sendable {
    /// The JSON key.
    let key: String
    /// Reads the key (absent or null: the property keeps its default) into the config, or throws naming the key.
    let read: @Sendable (inout Config, ConfigReader) throws(BindError) -> Void
    /// The value written for the config; the second argument is the source config's value for the key, if any.
    let write: @Sendable (Config, JSONValue?) -> JSONValue

    /// An integer size (1…2^20 unless `range` says otherwise).
    static func int(
        _ key: String, _ property: WritableKeyPath<Config, Int> & Sendable,
        in range: ClosedRange<Int> = ConfigReader.sizes
    ) -> Self {
        Self(
            key: key,
            read: { c, r throws(BindError) in c[keyPath: property] = try r.int(key, c[keyPath: property], in: range) },
            write: { c, _ in .number(String(c[keyPath: property])) })
    }

    /// A flag.
    static func bool(_ key: String, _ property: WritableKeyPath<Config, Bool> & Sendable) -> Self {
        Self(
            key: key, read: { c, r throws(BindError) in c[keyPath: property] = try r.bool(key, c[keyPath: property]) },
            write: { c, _ in .bool(c[keyPath: property]) })
    }

    /// A list of sizes.
    static func ints(_ key: String, _ property: WritableKeyPath<Config, [Int]> & Sendable) -> Self {
        Self(
            key: key, read: { c, r throws(BindError) in c[keyPath: property] = try r.ints(key, c[keyPath: property]) },
            write: { c, _ in .array(c[keyPath: property].map { .number(String($0)) }) })
    }

    /// A float, written as the source spelled it (configs are compared byte for byte with diffusers'), else as
    /// `written`, the spelling of the default in diffusers' own configs.
    static func float(_ key: String, _ property: WritableKeyPath<Config, Float> & Sendable, written: String) -> Self {
        Self(
            key: key, read: { c, r throws(BindError) in c[keyPath: property] = try r.float(key, c[keyPath: property]) },
            write: { _, source in if case .number(let text)? = source { .number(text) } else { .number(written) } })
    }

    /// A key the graph does not read (dropout during training, VAE scaling): written as the source had it (when it
    /// is of the same JSON kind), else as `written`.
    static func passThrough(_ key: String, written: JSONValue) -> Self {
        Self(
            key: key, read: { _, _ in },
            write: { _, source in
                switch (source, written) {
                case (.number(let text)?, .number): .number(text)
                case (.bool(let b)?, .bool): .bool(b)
                default: written
                }
            })
    }

    /// A string the graph implements one value of (others are refused, naming the key); written as that value.
    static func only(_ key: String, _ value: String) -> Self {
        Self(
            key: key, read: { _, r throws(BindError) in try r.require(key, try r.string(key, value), oneOf: [value]) },
            write: { _, _ in .string(value) })
    }

    /// A custom key.
    static func custom(
        _ key: String, read: @escaping @Sendable (inout Config, ConfigReader) throws(BindError) -> Void,
        write: @escaping @Sendable (Config, JSONValue?) -> JSONValue
    ) -> Self {
        Self(key: key, read: read, write: write)
    }
}

extension ConfigReader {
    /// Reads every field of `fields` onto `config`, in table order.
    func read<Config>(_ fields: [ConfigField<Config>], into config: inout Config) throws(BindError) {
        for field in fields { try field.read(&config, self) }
    }
}

/// The canonical config: `_class_name`, `_diffusers_version`, then every field (the tables are in key order, as
/// diffusers writes them).
func canonicalConfig<Config>(
    _ config: Config, fields: [ConfigField<Config>], className: String,
    source: JSONValue?
) -> JSONValue {
    var o = JSONObject()
    o.insert("_class_name", .string(className))
    o.insert("_diffusers_version", .string(CheckpointImport.diffusersVersion))
    for field in fields { o.insert(field.key, field.write(config, source?[field.key])) }
    return .object(o)
}

extension UVit2DConfig {
    /// diffusers' `UVit2DModel` config keys.
    static let diffusersFields: [ConfigField<UVit2DConfig>] = [
        .passThrough("attention_dropout", written: .number("0.0")),
        .int("block_num_heads", \.blockNumHeads),
        .int("block_out_channels", \.blockOutChannels),
        .int("codebook_size", \.codebookSize),
        .int("cond_embed_dim", \.condEmbedDim),
        .bool("downsample", \.downsample),
        .int("encoder_hidden_size", \.encoderHiddenSize),
        .passThrough("hidden_dropout", written: .number("0.0")),
        .int("hidden_size", \.hiddenSize),
        .int("in_channels", \.inChannels),
        .int("intermediate_size", \.intermediateSize),
        .float("layer_norm_eps", \.layerNormEps, written: "1e-06"),
        .bool("ln_elementwise_affine", \.lnElementwiseAffine),
        .int("micro_cond_embed_dim", \.microCondEmbedDim),
        .int("micro_cond_encode_dim", \.microCondEncodeDim),
        .int("num_attention_heads", \.numAttentionHeads),
        .int("num_hidden_layers", \.numHiddenLayers, in: ConfigReader.counts),
        .int("num_res_blocks", \.numResBlocks, in: ConfigReader.counts),
        .int("sample_size", \.sampleSize),
        .bool("upsample", \.upsample),
        .bool("use_bias", \.useBias),
        .int("vocab_size", \.vocabSize),
    ]

    /// Reads a diffusers `UVit2DModel` config.
    public init(json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        self.init()
        try r.read(Self.diffusersFields, into: &self)
    }
}

extension VQModelConfig {
    /// Block types are one kind repeated per level: checked against block_out_channels (read before them).
    static func blockTypes(_ key: String, _ kind: String) -> ConfigField<VQModelConfig> {
        .custom(
            key,
            read: { c, r throws(BindError) in
                let types = try r.strings(key, [kind])
                for t in types { try r.require(key, t, oneOf: [kind]) }
                guard types.count == c.blockOutChannels.count else {
                    throw BindError(
                        .config, path: r.path, key: key,
                        "\(types.count) block types for \(c.blockOutChannels.count) block_out_channels")
                }
            }, write: { c, _ in .array(Array(repeating: .string(kind), count: c.blockOutChannels.count)) })
    }

    /// diffusers' `VQModel` config keys (`force_upcast`, `sample_size`, `scaling_factor` at diffusers' defaults when
    /// the source has none: aMUSEd does not use them).
    static let diffusersFields: [ConfigField<VQModelConfig>] = [
        .only("act_fn", "silu"),
        .ints("block_out_channels", \.blockOutChannels),
        blockTypes("down_block_types", "DownEncoderBlock2D"),
        .passThrough("force_upcast", written: .bool(true)),
        .int("in_channels", \.inChannels),
        .int("latent_channels", \.latentChannels),
        .int("layers_per_block", \.layersPerBlock, in: ConfigReader.counts),
        .bool("lookup_from_codebook", \.lookupFromCodebook),
        .bool("mid_block_add_attention", \.midBlockAddAttention),
        .int("norm_num_groups", \.normNumGroups),
        .only("norm_type", "group"),
        .int("num_vq_embeddings", \.numVqEmbeddings),
        .int("out_channels", \.outChannels),
        .passThrough("sample_size", written: .number("32")),
        .passThrough("scaling_factor", written: .number("0.18215")),
        blockTypes("up_block_types", "UpDecoderBlock2D"),
        // null means latent_channels, as the released configs say it (taming's quantized_embed_dim equals z_channels).
        .custom(
            "vq_embed_dim", read: { c, r throws(BindError) in c.vqEmbedDim = try r.optionalInt("vq_embed_dim") },
            write: { c, _ in c.vqEmbedDim.flatMap { $0 == c.latentChannels ? nil : .number(String($0)) } ?? .null }),
    ]

    /// Reads a diffusers `VQModel` config.
    public init(json: JSONValue?, path: String) throws(BindError) {
        let r = try ConfigReader(json, path: path)
        self.init()
        try r.read(Self.diffusersFields, into: &self)
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
                throw BindError(
                    .config, path: path, key: "channel_mult",
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
            throw BindError(
                .config, path: path, key: "attn_resolutions", "attention inside the VQ levels is not implemented")
        }
    }
}
