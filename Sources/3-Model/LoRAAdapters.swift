// Trainable low-rank adapters on attention projections: what train_amused.py's `--use_lora` adds through PEFT
// (LoraConfig(r, lora_alpha, target_modules=["to_q", "to_k", "to_v"])): every Linear named to_q, to_k or to_v gets
// y = W·x + (alpha / r) · B·(A·x), A [r, in], B [out, r]; dropout 0, no bias. With `--train_text_encoder
// --text_encoder_use_lora` the text encoder gets the same on q_proj/k_proj/v_proj (the names CLIP has; the script's
// default, to_q/to_k/to_v, matches nothing in CLIP).

/// The LoRA adapters being trained on one component (the transformer or the text encoder), one per targeted Linear,
/// in graph order.
public struct LoRAAdapters: Sendable, Equatable {
    /// One adapter: A [rank, in] and B [out, rank], row-major.
    public struct Adapter: Sendable, Equatable {
        /// The Linear it adapts, as the graph names it (`transformer_layers.0.attn1.to_q`).
        public let module: String
        /// Input width of the Linear.
        public let inFeatures: Int
        /// Output width of the Linear.
        public let outFeatures: Int
        /// A (PEFT's `lora_A.weight`), [rank, in].
        public var a: [Float]
        /// B (PEFT's `lora_B.weight`), [out, rank].
        public var b: [Float]
    }

    /// The module names PEFT's target_modules of train_amused.py match in the transformer.
    public static let targetSuffixes = [".to_q", ".to_k", ".to_v"]
    /// The same in the text encoder.
    public static let textEncoderTargetSuffixes = [".q_proj", ".k_proj", ".v_proj"]

    /// The component the adapters belong to (`transformer` or `text_encoder`), the LoRA file's key prefix.
    public let component: String
    /// The rank r.
    public let rank: Int
    /// lora_alpha; the update is scaled by alpha / r.
    public let alpha: Float
    /// The adapters, in the order the graph declares their Linears.
    public var adapters: [Adapter]

    /// alpha / r, the factor PEFT applies to B·A·x.
    public var scale: Float { alpha / Float(rank) }

    /// Every Linear of `config`'s graph a LoRA adapts: (module, in, out), in declaration order.
    public static func targets(_ config: UVit2DConfig) throws(ModelError) -> [Target] {
        targets(try UVit2DModel.parameterSpecs(config), suffixes: targetSuffixes)
    }

    /// Every Linear of the text encoder a LoRA adapts (q_proj, k_proj, v_proj of each layer).
    public static func targets(_ config: CLIPTextConfig) throws(ModelError) -> [Target] {
        targets(try CLIPTextModel.parameterSpecs(config), suffixes: textEncoderTargetSuffixes)
    }

    /// An adapted Linear: its module name and widths.
    public typealias Target = (module: String, inFeatures: Int, outFeatures: Int)

    static func targets(_ specs: [ParameterSpec], suffixes: [String]) -> [Target] {
        specs.compactMap { spec in
            guard spec.key.hasSuffix(".weight") else { return nil }
            let module = String(spec.key.dropLast(".weight".count))
            guard suffixes.contains(where: module.hasSuffix), spec.shape.count == 2 else { return nil }
            return (module, spec.shape[1], spec.shape[0])
        }
    }

    /// Adapters for every target of `config`, initialised as PEFT does by default: A ~ U(−1/√in, 1/√in) (kaiming
    /// uniform with a = √5), B = 0, so training starts from the unchanged model. `uniform` draws U(0, 1).
    public init(config: UVit2DConfig, rank: Int, alpha: Float, uniform: () -> Float) throws(ModelError) {
        try self.init(
            component: "transformer", targets: try Self.targets(config), rank: rank, alpha: alpha,
            uniform: uniform)
    }

    /// Text-encoder adapters, initialised the same way.
    public init(textConfig: CLIPTextConfig, rank: Int, alpha: Float, uniform: () -> Float) throws(ModelError) {
        try self.init(
            component: "text_encoder", targets: try Self.targets(textConfig), rank: rank, alpha: alpha,
            uniform: uniform)
    }

    init(component: String, targets: [Target], rank: Int, alpha: Float, uniform: () -> Float) throws(ModelError) {
        guard rank > 0 else { throw .invalidConfig("the LoRA rank must be positive, not \(rank)") }
        guard alpha.isFinite, alpha > 0 else {
            throw .invalidConfig("lora_alpha must be a positive number, not \(alpha)")
        }
        self.component = component
        self.rank = rank
        self.alpha = alpha
        adapters = targets.map { t in
            let bound = 1 / Float(t.inFeatures).squareRoot()
            return Adapter(
                module: t.module, inFeatures: t.inFeatures, outFeatures: t.outFeatures,
                a: (0..<(rank * t.inFeatures)).map { _ in (2 * uniform() - 1) * bound },
                b: [Float](repeating: 0, count: t.outFeatures * rank))
        }
    }

    /// Adapters with the given values; each must match a target of `config` with A [rank, in] and B [out, rank],
    /// and every target must be present.
    public init(config: UVit2DConfig, rank: Int, alpha: Float, values: [String: (a: [Float], b: [Float])])
        throws(ModelError)
    {
        try self.init(
            component: "transformer", targets: try Self.targets(config), rank: rank, alpha: alpha,
            values: values)
    }

    /// Text-encoder adapters with the given values.
    public init(textConfig: CLIPTextConfig, rank: Int, alpha: Float, values: [String: (a: [Float], b: [Float])])
        throws(ModelError)
    {
        try self.init(
            component: "text_encoder", targets: try Self.targets(textConfig), rank: rank, alpha: alpha,
            values: values)
    }

    init(component: String, targets: [Target], rank: Int, alpha: Float, values: [String: (a: [Float], b: [Float])])
        throws(ModelError)
    {
        guard rank > 0, alpha.isFinite, alpha > 0 else {
            throw .invalidConfig("LoRA rank \(rank) and alpha \(alpha) must be positive")
        }
        if let stray = values.keys.sorted().first(where: { key in !targets.contains { $0.module == key } }) {
            throw .invalidInput("\(stray) is not a Linear the \(component) LoRA adapts")
        }
        var adapters: [Adapter] = []
        for t in targets {
            guard let v = values[t.module] else { throw .missingParameter(t.module + ".lora_A.weight") }
            guard v.a.count == rank * t.inFeatures else {
                throw .shapeMismatch(
                    key: t.module + ".lora_A.weight", expected: [rank, t.inFeatures],
                    found: [v.a.count])
            }
            guard v.b.count == t.outFeatures * rank else {
                throw .shapeMismatch(
                    key: t.module + ".lora_B.weight", expected: [t.outFeatures, rank],
                    found: [v.b.count])
            }
            adapters.append(
                Adapter(
                    module: t.module, inFeatures: t.inFeatures, outFeatures: t.outFeatures,
                    a: v.a, b: v.b))
        }
        self.component = component
        self.rank = rank
        self.alpha = alpha
        self.adapters = adapters
    }

    /// Index of the adapter on `module`, if it is targeted.
    func index(of module: String) -> Int? { adapters.firstIndex { $0.module == module } }

    /// Number of trained values.
    public var parameterCount: Int { adapters.reduce(0) { $0 + $1.a.count + $1.b.count } }
}

/// Gradients of a loss with respect to every adapter's A and B, in `LoRAAdapters.adapters` order.
public struct LoRAGradients: Sendable {
    /// ∂L/∂A per adapter, [rank, in].
    public var a: [[Float]]
    /// ∂L/∂B per adapter, [out, rank].
    public var b: [[Float]]

    /// Zeros shaped like `adapters`.
    public init(zerosLike adapters: LoRAAdapters) {
        a = adapters.adapters.map { [Float](repeating: 0, count: $0.a.count) }
        b = adapters.adapters.map { [Float](repeating: 0, count: $0.b.count) }
    }

    /// The global L2 norm over every gradient (what `clip_grad_norm_` measures).
    public var norm: Float {
        var sum: Double = 0
        for g in a + b { for x in g { sum += Double(x) * Double(x) } }
        return Float(sum.squareRoot())
    }
}
