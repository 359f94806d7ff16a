// Loading a diffusers aMUSEd checkpoint folder into the Swift graph: configs, strict binding, tokenizer, scheduler.

import AmusedModel
import AmusedRead
import AmusedTensors
import Foundation

/// The aMUSEd components found in a checkpoint, bound and ready to run. Any may be absent when the checkpoint
/// holds only some components (a lone `transformer/` folder, say).
public struct AmusedComponents: Sendable {
    /// The checkpoint as found on disk.
    public let checkpoint: Checkpoint
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
    /// `masking_schedule` of the scheduler config (`cosine` by default).
    public let maskingSchedule: String
    /// Tensors dropped by a rule while binding, per component.
    public let dropped: [String: [(key: String, reason: String)]]

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
    /// `only`; `variant` picks `*.{variant}.safetensors` files.
    public init(path: String, variant: String? = nil, only: Set<Part> = Set(Part.allCases)) throws {
        let checkpoint = try Checkpoint(path: path, variant: variant)
        self.checkpoint = checkpoint
        var dropped: [String: [(String, String)]] = [:]
        func component(_ names: [String], classes: [String]) -> CheckpointComponent? {
            guard let part = Part(rawValue: names[0]), only.contains(part) else { return nil }
            return checkpoint.components.first { names.contains($0.name) || classes.contains($0.className ?? "") }
        }
        func bound(_ c: CheckpointComponent, _ specs: [ParameterSpec], drop: [DropRule] = []) throws -> Weights {
            guard let weights = c.weights else {
                throw BindError(.missing, path: c.configPath ?? checkpoint.path, "component \(c.name) has no weights file")
            }
            let b = try bind(weights, to: specs, drop: drop)
            dropped[c.name] = b.dropped
            return b.weights
        }
        if let c = component(["text_encoder"], classes: ["CLIPTextModelWithProjection"]), c.weights != nil {
            let config = try CLIPTextConfig(json: c.config, path: c.configPath ?? c.name)
            let weights = try bound(c, try CLIPTextModel.parameterSpecs(config), drop: [.clipPositionIds])
            textEncoder = try CLIPTextModel(config: config, scope: .binding(weights))
        } else {
            textEncoder = nil
        }
        if let c = component(["transformer"], classes: ["UVit2DModel"]), c.weights != nil {
            let config = try UVit2DConfig(json: c.config, path: c.configPath ?? c.name)
            let weights = try bound(c, try UVit2DModel.parameterSpecs(config))
            transformer = try UVit2DModel(config: config, scope: .binding(weights))
        } else {
            transformer = nil
        }
        if let c = component(["vqvae"], classes: ["VQModel"]), c.weights != nil {
            let config = try VQModelConfig(json: c.config, path: c.configPath ?? c.name)
            let weights = try bound(c, try VQModel.parameterSpecs(config))
            vqvae = try VQModel(config: config, scope: .binding(weights))
        } else {
            vqvae = nil
        }
        if let c = component(["tokenizer"], classes: ["CLIPTokenizer"]) {
            let folder = checkpoint.path + "/" + c.name
            tokenizer = try Self.loadTokenizer(folder: folder)
        } else {
            tokenizer = nil
        }
        let scheduler = checkpoint.components.first { $0.name == "scheduler" || $0.className == "AmusedScheduler" }?.config
        maskTokenId = scheduler?["mask_token_id"]?.intValue ?? transformer.map { $0.config.vocabSize - 1 }
        maskingSchedule = scheduler?["masking_schedule"]?.stringValue ?? "cosine"
        self.dropped = dropped
    }

    /// Reads `vocab.json`, `merges.txt` and the pad token from `tokenizer_config.json` / `special_tokens_map.json`.
    public static func loadTokenizer(folder: String) throws -> CLIPTokenizer {
        let vocabPath = folder + "/vocab.json", mergesPath = folder + "/merges.txt"
        let vocabJSON = try Checkpoint.readJSON(vocabPath)
        guard let object = vocabJSON.objectValue else {
            throw BindError(.tokenizer, path: vocabPath, "vocab.json is not a JSON object")
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(object.entries.count)
        for (token, id) in object.entries {
            guard let i = id.intValue else { throw BindError(.tokenizer, path: vocabPath, key: token, "id is not an integer") }
            vocab[token] = i
        }
        guard let merges = try? String(contentsOfFile: mergesPath, encoding: .utf8) else {
            throw BindError(.tokenizer, path: mergesPath, "cannot read merges.txt as UTF-8")
        }
        var pad = "<|endoftext|>"
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = folder + "/" + file
            guard FileManager.default.fileExists(atPath: p), let json = try? Checkpoint.readJSON(p) else { continue }
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
