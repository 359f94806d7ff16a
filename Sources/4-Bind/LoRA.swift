// LoRA: a diffusers/PEFT `pytorch_lora_weights.safetensors` fused into the bound weights, W' = W + s · B · A.
//
// The files train_amused.py writes (docs/model-notes.md §6.1) hold `transformer.<module>.lora_A.weight` [r, in] and
// `…lora_B.weight` [out, r] (and the same under `text_encoder.`), and **no alpha**: on reload diffusers takes
// lora_alpha = r, an effective scale of 1.0, whatever alpha was used in training (train_amused.py's defaults give
// 32 / 16 = 2.0). So the scale is the user's to state; 1.0 reproduces diffusers' reload. Files that do carry
// `<module>.alpha` (kohya-style), or diffusers' `lora_adapter_metadata` in the safetensors header (what
// `amused finetune` writes), are fused at scale · alpha / r. The older `lora.down.weight` / `lora.up.weight`
// names are read too. Anything else — DoRA magnitude vectors, LoRA biases, convolution LoRAs, a module the graph
// does not have — is an error naming the key, never skipped.

import AmusedCore
import AmusedKernels
import AmusedModel
import AmusedRead
import Foundation

/// A LoRA file, parsed and checked, ready to fuse into a component's weights.
public struct LoRA: Sendable {
    /// One low-rank update of one Linear weight.
    public struct Pair: Sendable {
        /// The weight it updates, as the graph names it (`transformer_layers.0.attn1.to_q.weight`).
        public let target: String
        /// A (`lora_A` / `lora.down`), [rank, in].
        public let down: Tensor
        /// B (`lora_B` / `lora.up`), [out, rank].
        public let up: Tensor
        /// The file's `alpha` for this module, when it has one.
        public let alpha: Float?
        /// The rank r.
        public var rank: Int { down.shape[0] }
    }

    /// The file it was read from.
    public let path: String
    /// Pairs by component (`transformer`, `text_encoder`).
    public let pairs: [String: [Pair]]

    /// Components a LoRA file may address, by key prefix.
    public static let components = ["transformer", "text_encoder"]

    /// Whether any pair carries its own alpha (otherwise the scale alone is used).
    public var hasAlpha: Bool { pairs.values.joined().contains { $0.alpha != nil } }

    /// The ranks found, for reports.
    public var ranks: [Int] { Array(Set(pairs.values.joined().map(\.rank))).sorted() }

    /// Reads and checks a LoRA file (safetensors, or any format `openWeights` reads).
    public init(path: String) throws(BindError) {
        let source: any TensorSource
        do { source = try openWeights(path: path) } catch {
            throw BindError(.lora, path: path, error.errorDescription ?? "\(error)")
        }
        try self.init(source)
    }

    /// Parses the tensors of an opened LoRA file.
    public init(_ source: any TensorSource) throws(BindError) {
        path = source.path
        var parts: [String: [String: [Checkpoint.LoRARole: TensorInfo]]] = [:]  // component → module → role
        for info in source.infos {
            guard let component = Self.components.first(where: { info.name.hasPrefix($0 + ".") }) else {
                throw BindError(
                    .lora, path: path, key: info.name,
                    "the key does not start with `transformer.` or `text_encoder.`, the prefixes diffusers' "
                        + "save_lora_weights writes; this is not an aMUSEd LoRA file")
            }
            let rest = String(info.name.dropFirst(component.count + 1))
            guard let (suffix, role) = Checkpoint.loraSuffixes.first(where: { rest.hasSuffix($0.suffix) }) else {
                throw BindError(
                    .lora, path: path, key: info.name,
                    "not a LoRA A/B weight or alpha (DoRA magnitude vectors, LoRA biases and embedding LoRAs "
                        + "cannot be fused by this toolkit)")
            }
            let module = String(rest.dropLast(suffix.count))
            if parts[component, default: [:]][module, default: [:]][role] != nil {
                throw BindError(.lora, path: path, key: info.name, "a second \(role) tensor for module \(module)")
            }
            parts[component, default: [:]][module, default: [:]][role] = info
        }
        let configured = try Self.adapterConfigs(source)
        var pairs: [String: [Pair]] = [:]
        for (component, modules) in parts {
            for module in modules.keys.sorted() {
                let roles = modules[module]!
                let key = component + "." + module
                guard let a = roles[.down], let b = roles[.up] else {
                    throw BindError(
                        .lora, path: path, key: key,
                        roles[.down] == nil
                            ? "has B (up) but no A (down) weight" : "has A (down) but no B (up) weight")
                }
                guard a.shape.count == 2, b.shape.count == 2 else {
                    throw BindError(
                        .lora, path: path, key: a.name,
                        "A is \(describeShape(a.shape)) and B is "
                            + "\(describeShape(b.shape)); only Linear LoRAs (2-D A and B) can be fused")
                }
                guard a.shape[0] == b.shape[1], a.shape[0] > 0 else {
                    throw BindError(
                        .lora, path: path, key: key,
                        "ranks disagree: A is \(describeShape(a.shape)), "
                            + "B is \(describeShape(b.shape)) (expected A [r, in], B [out, r])")
                }
                var alpha: Float?
                if let info = roles[.alpha] {
                    guard info.shape.reduce(1, *) == 1, let v = try? Self.floats(source, info).first else {
                        throw BindError(
                            .lora, path: path, key: info.name,
                            "alpha must be one number, found \(describeShape(info.shape))")
                    }
                    alpha = v
                } else if let config = configured[component] {
                    // diffusers' lora_adapter_metadata: one LoraConfig (r, lora_alpha) for the whole component.
                    guard config.rank == a.shape[0] else {
                        throw BindError(
                            .lora, path: path, key: key,
                            "the file's lora_adapter_metadata says r = "
                                + "\(config.rank) for the \(component), but A is \(describeShape(a.shape))")
                    }
                    alpha = config.alpha
                }
                let down: Tensor, up: Tensor
                do {
                    down = try Tensor(floats: try Self.floats(source, a), shape: a.shape)
                    up = try Tensor(floats: try Self.floats(source, b), shape: b.shape)
                } catch {
                    throw BindError(.lora, path: path, key: key, "cannot read the A/B weights as numbers: \(error)")
                }
                pairs[component, default: []].append(Pair(target: module + ".weight", down: down, up: up, alpha: alpha))
            }
        }
        self.pairs = pairs
    }

    /// The per-component LoraConfig diffusers ≥ 0.34 writes into the safetensors metadata (`lora_adapter_metadata`:
    /// {"transformer.r": 16, "transformer.lora_alpha": 32, …}). Per-module rank or alpha patterns are refused: this
    /// toolkit fuses one scale per component.
    static func adapterConfigs(_ source: any TensorSource) throws(BindError) -> [String: (rank: Int, alpha: Float)] {
        guard let file = source as? SafetensorsFile, let text = file.metadataValue("lora_adapter_metadata") else {
            return [:]
        }
        let json: JSONValue
        do { json = try StrictJSONParser(path: source.path).parse(Array(text.utf8)) } catch {
            throw BindError(
                .lora, path: source.path, key: "__metadata__.lora_adapter_metadata", "is not JSON: \(error)")
        }
        guard let object = json.objectValue else {
            throw BindError(.lora, path: source.path, key: "__metadata__.lora_adapter_metadata", "is not a JSON object")
        }
        var out: [String: (rank: Int, alpha: Float)] = [:]
        for component in components {
            let r = object[component + ".r"], alpha = object[component + ".lora_alpha"]
            guard r != nil || alpha != nil else { continue }
            let key = "__metadata__.lora_adapter_metadata." + component
            guard let rank = r?.intValue, rank > 0, let a = alpha?.doubleValue, Float(a).isFinite, a > 0 else {
                throw BindError(
                    .lora, path: source.path, key: key, "needs a positive integer r and a positive lora_alpha")
            }
            if object[component + ".use_rslora"]?.boolValue == true {
                throw BindError(
                    .lora, path: source.path, key: key + ".use_rslora",
                    "rank-stabilised LoRA (scale alpha / √r) is not supported; only alpha / r")
            }
            for pattern in ["rank_pattern", "alpha_pattern"] {
                if let p = object[component + "." + pattern], p.objectValue.map({ !$0.keys.isEmpty }) ?? (p != .null) {
                    throw BindError(
                        .lora, path: source.path, key: key + "." + pattern,
                        "per-module ranks or alphas cannot be fused by this toolkit (one scale per component)")
                }
            }
            out[component] = (rank, Float(a))
        }
        return out
    }

    static func floats(_ source: any TensorSource, _ info: TensorInfo) throws -> [Float] {
        try source.tensor(named: info.name).floats()
    }

    /// `weights` with every pair of `component` fused in at `scale` (times alpha / r where the file has alpha).
    /// Every pair must name a weight of the graph with shape [out, in] matching B's rows and A's columns.
    /// Weights not touched stay as they were (zero-copy views stay views).
    public func fuse(_ weights: Weights, component: String, scale: Float) throws(BindError) -> Weights {
        var tensors = weights.tensors
        try check(shapes: tensors.mapValues(\.shape), component: component)
        for pair in pairs[component] ?? [] {
            tensors[pair.target] = try fused(tensors[pair.target]!, pair, component: component, scale: scale)
        }
        do { return try Weights(tensors) } catch { throw BindError(.lora, path: path, "\(error)") }
    }

    /// Checks that every pair of `component` names a weight among `shapes` with the shape B · A has.
    public func check(shapes: [String: [Int]], component: String) throws(BindError) {
        for pair in pairs[component] ?? [] {
            let key = component + "." + pair.target
            guard let shape = shapes[pair.target] else {
                throw BindError(
                    .lora, path: path, key: key,
                    "the \(component) graph has no weight \(pair.target) for this LoRA to update; "
                        + "the LoRA was trained on a different model")
            }
            let out = pair.up.shape[0], inner = pair.down.shape[1]
            guard shape == [out, inner] else {
                throw BindError(
                    .lora, path: path, key: key,
                    "B · A is [\(out), \(inner)] but \(pair.target) is "
                        + "\(describeShape(shape)); the LoRA was trained on a different model")
            }
        }
    }

    /// Throws when the LoRA updates `component` and `checkpoint` has none: such updates are never skipped silently.
    public func refuseAbsent(_ component: String, in checkpoint: String) throws(BindError) {
        guard let first = pairs[component]?.first else { return }
        throw BindError(
            .lora, path: path, key: component + "." + first.target,
            "the LoRA updates the \(component) but \(checkpoint) has no \(component)")
    }

    /// The pair updating `target` of `component`, if any.
    public func pair(_ target: String, component: String) -> Pair? {
        pairs[component]?.first { $0.target == target }
    }

    /// `w` + effective scale · B · A in float32 (shapes checked by `check`).
    public func fused(_ w: Tensor, _ pair: Pair, component: String, scale: Float) throws(BindError) -> Tensor {
        let key = component + "." + pair.target
        let out = pair.up.shape[0], inner = pair.down.shape[1], r = pair.rank
        // The GEMM below writes out × inner floats into w's values: w must be exactly that (not only as described).
        guard w.shape == [out, inner] else {
            throw BindError(
                .lora, path: path, key: key,
                "B · A is [\(out), \(inner)] but the weight read is "
                    + "\(describeShape(w.shape))")
        }
        let effective = scale * (pair.alpha.map { $0 / Float(r) } ?? 1)
        do {
            var fused = try w.floats()
            let a = try pair.down.floats(), b = try pair.up.floats()
            fused.withUnsafeMutableBufferPointer { c in
                b.withUnsafeBufferPointer { bp in
                    a.withUnsafeBufferPointer { ap in
                        Kernels.sgemm(
                            m: out, n: inner, k: r, a: bp.baseAddress!, lda: r, b: ap.baseAddress!,
                            ldb: inner, transposeB: false, c: c.baseAddress!, ldc: inner,
                            alpha: effective, beta: 1)
                    }
                }
            }
            return try Tensor(floats: fused, shape: w.shape)
        } catch {
            throw BindError(.lora, path: path, key: key, "\(error)")
        }
    }

    /// The loud note a tool prints before fusing: what scale is used and why.
    public func scaleNote(scale: Float) -> String {
        let count = pairs.values.reduce(0) { $0 + $1.count }
        let targets = Self.components.filter { pairs[$0] != nil }.joined(separator: " and ")
        let ranks = ranks.map(String.init).joined(separator: ", ")
        if hasAlpha {
            return "LoRA \(path): \(count) Linear updates (rank \(ranks)) into the \(targets), fused at scale "
                + "\(scale) × alpha / r, with alpha from the file."
        }
        return "LoRA \(path): \(count) Linear updates (rank \(ranks)) into the \(targets). The file stores no alpha, "
            + "so it is fused at scale \(scale) (diffusers reloads such files at 1.0; training used alpha / r, "
            + "2.0 with train_amused.py's defaults). Choose with --lora-scale."
    }
}

/// A LoRA and the scale to fuse it at, as `AmusedComponents` takes it.
public struct LoRAFusion: Sendable {
    /// The LoRA file.
    public let lora: LoRA
    /// The user's scale (times alpha / r where the file has alpha).
    public let scale: Float

    /// Pairs a parsed LoRA with a scale.
    public init(_ lora: LoRA, scale: Float) {
        self.lora = lora
        self.scale = scale
    }
}
