// Loading a diffusers aMUSEd checkpoint folder into the Swift graph: configs, strict binding, tokenizer, scheduler.

import AmusedCore
import AmusedMap
import AmusedModel
import AmusedRead
import Foundation

/// The aMUSEd components found in a checkpoint, bound and ready to run. Any may be absent when the checkpoint
/// holds only some components (a lone `transformer/` folder, say).
public struct AmusedComponents: Sendable {
    /// The checkpoint as found on disk (nil for components loaded from a bundle).
    public let checkpoint: Checkpoint?
    /// Where the components came from (a checkpoint folder or file, or a bundle).
    public let source: String
    /// CLIPTextModelWithProjection.
    public let textEncoder: CLIPTextModel?
    /// UVit2DModel.
    public let transformer: UVit2DModel?
    /// VQModel.
    public let vqvae: VQModel?
    /// CLIPTokenizer from `tokenizer/vocab.json` and `merges.txt`.
    public let tokenizer: CLIPTokenizer?
    /// `scheduler/scheduler_config.json`'s `mask_token_id` (or the transformer's vocab_size − 1).
    public let maskTokenId: Int?
    /// `masking_schedule` of the scheduler config (`cosine` by default); the inpainting pipeline switches to linear.
    public let maskingSchedule: MaskingSchedule
    /// Tensors a name-map rule dropped (with its reason), per component.
    public let dropped: [String: [(key: String, reason: String)]]
    /// The name-map ledger of each component (diffusers names go through the identity maps).
    public let ledgers: [String: MapLedger]
    /// The sampling settings the model recommends (`model_index.json`'s `_amused_defaults`, or a bundle's
    /// `sampling`), used where a caller gives none; nil when it recommends none.
    public let samplingDefaults: SamplingDefaults?

    /// The components a caller may ask for.
    public enum Part: String, CaseIterable, Sendable {
        /// The CLIP text encoder.
        case textEncoder = "text_encoder"
        /// The UVit2D transformer.
        case transformer
        /// The VQ-GAN.
        case vqvae
        /// The tokenizer.
        case tokenizer
    }

    /// Loads the components `path` holds (a pipeline folder or one component folder), all of them or only those in
    /// `only`; `variant` picks `*.{variant}.safetensors` files; `lora` is fused into the transformer and text encoder
    /// (a LoRA update for a component the checkpoint lacks is an error; one for a component not asked for is unused).
    /// `layout` forces a layout instead of detecting it; `configs` gives a single-file checkpoint its configs.
    public init(
        path: String, variant: String? = nil, only: Set<Part> = Set(Part.allCases), lora: LoRAFusion? = nil,
        layout: Checkpoint.Layout? = nil, configs: String? = nil
    ) throws {
        try self.init(
            checkpoint: try Checkpoint(path: path, variant: variant, layout: layout, configs: configs),
            only: only, lora: lora)
    }

    /// Loads the components of an opened checkpoint.
    public init(checkpoint: Checkpoint, only: Set<Part> = Set(Part.allCases), lora: LoRAFusion? = nil) throws {
        if checkpoint.isLoRA {
            throw BindError(
                .lora, path: checkpoint.path,
                "this is a LoRA file, not a model: pass it with --lora "
                    + "alongside the base checkpoint it was trained on")
        }
        self.checkpoint = checkpoint
        self.source = checkpoint.path
        var dropped: [String: [(String, String)]] = [:]
        /// The model component for `part` (with weights), if asked for and present, and how it meets the graph.
        func model(_ part: Part) throws -> (CheckpointComponent, ComponentGraph)? {
            guard only.contains(part),
                let c = checkpoint.components.first(where: { ComponentGraph.isPart(part, $0) && $0.weights != nil })
            else { return nil }
            return try ComponentGraph(c, layout: checkpoint.layout).map { (c, $0) }
        }
        /// Binds a component through its name map (identity for diffusers names), recording the ledger.
        func mapped(_ c: CheckpointComponent, _ graph: ComponentGraph) throws -> Weights {
            let view = try MappedSource(c.weights!, map: try NameMap.shipped(graph.map), constants: graph.constants)
            ledgers[c.name] = view.ledger
            dropped[c.name] = view.ledger.entries.filter { $0.kind == .dropped }
                .flatMap { e in e.sources.map { ($0, e.detail ?? "dropped by the map") } }
            return try bind(view, to: graph.specs).weights
        }
        /// The LoRA's pairs for `name`, fused in (after any name map: LoRA files use the diffusers names).
        func fused(_ weights: Weights, _ name: String) throws -> Weights {
            guard let lora else { return weights }
            return try lora.lora.fuse(weights, component: name, scale: lora.scale)
        }
        func absent(_ name: String, _ part: Part) throws {
            if let lora, only.contains(part) { try lora.lora.refuseAbsent(name, in: checkpoint.path) }
        }
        let openMuse = checkpoint.layout == .openMuse
        var ledgers: [String: MapLedger] = [:]
        if let (c, graph) = try model(.textEncoder), case .textEncoder(let config) = graph.config {
            textEncoder = try CLIPTextModel(
                config: config, scope: .binding(try fused(try mapped(c, graph), "text_encoder")))
        } else {
            textEncoder = nil
            try absent("text_encoder", .textEncoder)
        }
        if let (c, graph) = try model(.transformer), case .transformer(let config) = graph.config {
            transformer = try UVit2DModel(
                config: config, scope: .binding(try fused(try mapped(c, graph), "transformer")))
        } else {
            transformer = nil
            try absent("transformer", .transformer)
        }
        if let (c, graph) = try model(.vqvae), case .vqvae(let config) = graph.config {
            vqvae = try VQModel(config: config, scope: .binding(try mapped(c, graph)))
        } else {
            vqvae = nil
        }
        if only.contains(.tokenizer), !openMuse,
            let c = checkpoint.components.first(where: { $0.name == "tokenizer" || $0.className == "CLIPTokenizer" })
        {
            tokenizer = try Self.loadTokenizer(folder: c.folder ?? checkpoint.path + "/" + c.name)
        } else if openMuse, FileManager.default.fileExists(atPath: checkpoint.path + "/text_encoder/vocab.json") {
            // open-muse keeps the tokenizer files beside the text encoder.
            tokenizer = try Self.loadTokenizer(folder: checkpoint.path + "/text_encoder")
        } else {
            tokenizer = nil
        }
        self.ledgers = ledgers
        let schedulerComponent = checkpoint.components.first {
            $0.name == "scheduler" || $0.className == "AmusedScheduler"
        }
        let scheduler = schedulerComponent?.config
        // open-muse has no scheduler config: the mask id comes from the transformer config.
        let transformerConfig = checkpoint.components.first { $0.name == "transformer" }?.config
        maskTokenId =
            scheduler?["mask_token_id"]?.intValue ?? transformerConfig?["mask_token_id"]?.intValue
            ?? transformer.map { $0.config.vocabSize - 1 }
        let schedulerFile = schedulerComponent?.folder.map { $0 + "/scheduler_config.json" }
        maskingSchedule = try Self.maskingSchedule(
            scheduler?["masking_schedule"],
            path: schedulerFile ?? checkpoint.path + " [scheduler config]")
        samplingDefaults = try CheckpointImport.samplingDefaults(checkpoint)
        self.dropped = dropped
    }

    /// Components bound elsewhere (from a bundle): `source` names where they came from.
    public init(
        source: String, textEncoder: CLIPTextModel?, transformer: UVit2DModel?, vqvae: VQModel?,
        tokenizer: CLIPTokenizer?, maskTokenId: Int?, maskingSchedule: MaskingSchedule,
        samplingDefaults: SamplingDefaults? = nil
    ) {
        self.checkpoint = nil
        self.source = source
        self.textEncoder = textEncoder
        self.transformer = transformer
        self.vqvae = vqvae
        self.tokenizer = tokenizer
        self.maskTokenId = maskTokenId ?? transformer.map { $0.config.vocabSize - 1 }
        self.maskingSchedule = maskingSchedule
        self.samplingDefaults = samplingDefaults
        self.dropped = [:]
        self.ledgers = [:]
    }

    /// The scheduler config's `masking_schedule` (absent: cosine, AmusedScheduler's default). diffusers' scheduler
    /// knows only cosine and linear and fails at its first step on anything else; this refuses it at load instead.
    public static func maskingSchedule(_ value: JSONValue?, path: String) throws(BindError) -> MaskingSchedule {
        guard let value, value != .null else { return .cosine }
        guard let name = value.stringValue, let schedule = MaskingSchedule(rawValue: name) else {
            throw BindError(
                .config, path: path, key: "masking_schedule",
                "\(value.serialized) is not a masking schedule diffusers' AmusedScheduler knows; "
                    + "use \"cosine\" or \"linear\"")
        }
        return schedule
    }

    /// Reads `vocab.json`, `merges.txt` and the pad token from `tokenizer_config.json` / `special_tokens_map.json`.
    public static func loadTokenizer(folder: String) throws -> CLIPTokenizer {
        let fm = FileManager.default
        return try loadTokenizer(path: folder) { name in
            let p = folder + "/" + name
            guard fm.fileExists(atPath: p) else { return nil }
            return try ReadOnlyFile(path: p).readAll()
        }
    }

    /// Reads the tokenizer from files `read(name)` returns (nil when absent); `path` names them in errors.
    public static func loadTokenizer(path folder: String, read: (String) throws -> [UInt8]?) throws -> CLIPTokenizer {
        let vocabPath = folder + "/vocab.json", mergesPath = folder + "/merges.txt"
        guard let vocabBytes = try read("vocab.json") else { throw BindError(.tokenizer, path: vocabPath, "missing") }
        guard vocabBytes.count <= 16 << 20 else { throw BindError(.tokenizer, path: vocabPath, "larger than 16 MiB") }
        let vocabJSON = try StrictJSONParser(path: vocabPath).parse(vocabBytes)
        guard let object = vocabJSON.objectValue else {
            throw BindError(.tokenizer, path: vocabPath, "vocab.json is not a JSON object")
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(object.entries.count)
        for (token, id) in object.entries {
            guard let i = id.intValue else {
                throw BindError(.tokenizer, path: vocabPath, key: token, "id is not an integer")
            }
            vocab[token] = i
        }
        guard let mergesBytes = try read("merges.txt"), let merges = String(validating: mergesBytes, as: UTF8.self)
        else {
            throw BindError(.tokenizer, path: mergesPath, "cannot read merges.txt as UTF-8")
        }
        var pad = "<|endoftext|>"
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = folder + "/" + file
            guard let bytes = try? read(file), let json = try? StrictJSONParser(path: p).parse(bytes) else { continue }
            if let s = json["pad_token"]?.stringValue ?? json["pad_token"]?["content"]?.stringValue {
                pad = s
                break
            }
        }
        do {
            return try CLIPTokenizer(vocab: vocab, mergesText: merges, padToken: pad)
        } catch {
            throw BindError(.tokenizer, path: folder, "\(error)")
        }
    }
}

extension AmusedPipeline {
    /// A pipeline over `components`, which must hold all of them: tokenizer, text encoder, transformer and VQ-GAN, with
    /// the scheduler config's mask token id and masking schedule. Throws naming the parts that are missing.
    public init(components c: AmusedComponents) throws(BindError) {
        guard let tokenizer = c.tokenizer, let textEncoder = c.textEncoder, let transformer = c.transformer,
            let vqvae = c.vqvae, let maskTokenId = c.maskTokenId
        else {
            let missing = [
                ("tokenizer", c.tokenizer == nil), ("text_encoder", c.textEncoder == nil),
                ("transformer", c.transformer == nil), ("vqvae", c.vqvae == nil),
            ]
            .filter(\.1).map(\.0)
            throw BindError(
                .missing, path: c.source,
                "a pipeline needs all its components; missing: "
                    + (missing.isEmpty ? "the mask token id" : missing.joined(separator: ", "))
                    + " (use a pipeline folder or a bundle converted from one)")
        }
        self.init(
            tokenizer: tokenizer, textEncoder: textEncoder, transformer: transformer, vqvae: vqvae,
            maskTokenId: maskTokenId, maskingSchedule: c.maskingSchedule)
    }
}

/// The sampling settings a model recommends for itself. diffusers has no place for them, so a pipeline folder keeps
/// them in `model_index.json` under `_amused_defaults` (diffusers ignores keys that start with an underscore) and a
/// bundle in its manifest's `sampling`: `{"steps": 12, "guidance": 4.0}`, either key optional.
public struct SamplingDefaults: Sendable, Equatable {
    /// The key in `model_index.json`.
    public static let modelIndexKey = "_amused_defaults"
    /// Sampling steps, 1…1000.
    public var steps: Int?
    /// Classifier-free guidance scale, finite and 0…100.
    public var guidance: Float?

    /// Settings as given.
    public init(steps: Int? = nil, guidance: Float? = nil) {
        self.steps = steps
        self.guidance = guidance
    }

    /// Reads `{"steps": …, "guidance": …}` strictly (an unknown key or a value out of range is an error).
    public init(json: JSONValue, path: String) throws(BindError) {
        guard let object = json.objectValue else {
            throw BindError(
                .config, path: path, key: Self.modelIndexKey,
                "\(json.serialized) is not an object; "
                    + "write {\"steps\": 12, \"guidance\": 4.0}")
        }
        for (key, _) in object.entries where key != "steps" && key != "guidance" {
            throw BindError(
                .config, path: path, key: Self.modelIndexKey + "." + key,
                "unknown sampling setting; the known ones are steps and guidance")
        }
        if let v = object["steps"] {
            guard let n = v.intValue, (1...1000).contains(n) else {
                throw BindError(
                    .config, path: path, key: Self.modelIndexKey + ".steps",
                    "\(v.serialized) is not a step count between 1 and 1000")
            }
            steps = n
        }
        if let v = object["guidance"] {
            guard let g = v.doubleValue, g.isFinite, (0...100).contains(g) else {
                throw BindError(
                    .config, path: path, key: Self.modelIndexKey + ".guidance",
                    "\(v.serialized) is not a guidance scale between 0 and 100")
            }
            guidance = Float(g)
        }
    }

    /// The JSON form, as read by `init(json:path:)`.
    public var json: JSONValue {
        var o = JSONObject()
        if let steps { o.insert("steps", .number(String(steps))) }
        if let guidance { o.insert("guidance", .number(String(guidance))) }
        return .object(o)
    }
}
