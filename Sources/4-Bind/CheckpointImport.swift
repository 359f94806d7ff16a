// A checkpoint of any supported layout in its canonical (diffusers) form, from names, shapes and configs alone: the
// import checked completely (every tensor mapped or dropped, every parameter present with its shape), each component's
// config on diffusers' schema, its tensors as a lazy source with a LoRA fused in, the tokenizer, scheduler and
// sampling defaults. Both outputs start here: the diffusers folder export and the `.amused` bundle (AmusedConvert).

import AmusedCore
import AmusedMap
import AmusedModel
import AmusedRead
import Foundation

/// A checkpoint's import, checked, and its canonical parts.
public enum CheckpointImport {
    /// The diffusers version whose config schemas the canonical configs follow.
    public static let diffusersVersion = "0.35.2"

    /// Checks `checkpoint` completely (every tensor mapped or dropped by a rule, every parameter present with its
    /// shape), unless `allowUnmapped` lets unmapped tensors be left out or `allowMissing` lets parameters be absent.
    /// Throws the first problem, naming the key.
    public static func check(
        _ checkpoint: Checkpoint, allowUnmapped: Bool = false,
        allowMissing: Bool = false
    ) throws -> [ComponentImportPlan] {
        let plans = try importPlan(checkpoint)
        guard !plans.isEmpty else {
            throw BindError(.missing, path: checkpoint.path, "no transformer, VQ-GAN or text encoder weights found")
        }
        for p in plans {
            let path = checkpoint.component(p.component)?.weights?.path ?? checkpoint.path
            if let m = p.misshapen.first {
                throw BindError(
                    .shape, path: path, key: m.key,
                    "shape \(describeShape(m.found)) after mapping, "
                        + "\(describeShape(m.expected)) implied by the config")
            }
            if let m = p.missing.first, !allowMissing {
                throw BindError(
                    .missing, path: path, key: m.key,
                    "the config implies this parameter with shape "
                        + "\(describeShape(m.shape)) but no source tensor provides it (\(p.missing.count) missing); "
                        + "--allow-missing writes the folder without them, recorded in the report")
            }
            if let u = p.unmapped.first, !allowUnmapped {
                throw BindError(
                    .unused, path: path, key: u,
                    "no rule of map \(p.map) consumes this tensor "
                        + "(\(p.unmapped.count) unmapped); pass --allow-unmapped to leave such tensors out, "
                        + "recorded in the report")
            }
        }
        return plans
    }

    /// The tokenizer files a pipeline carries (vocab.json and merges.txt are required, the others optional).
    public static let tokenizerFiles = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]

    /// A component's config on diffusers' / transformers' schema, its class name and diffusers weights file name.
    public static func canonicalConfig(_ p: ComponentImportPlan, _ checkpoint: Checkpoint)
        -> (config: JSONValue, className: String, weightsFile: String)
    {
        switch p.graph.config {
        case .transformer(let u):
            return (
                AmusedBind.canonicalConfig(
                    u, fields: UVit2DConfig.diffusersFields, className: "UVit2DModel",
                    source: checkpoint.component(p.component)?.config),
                "UVit2DModel", "diffusion_pytorch_model.safetensors"
            )
        case .vqvae(let v):
            // Not the source's keys: a taming config spells none of diffusers' (and diffusers' defaults are written).
            return (
                AmusedBind.canonicalConfig(
                    v, fields: VQModelConfig.diffusersFields, className: "VQModel",
                    source: nil),
                "VQModel", "diffusion_pytorch_model.safetensors"
            )
        case .textEncoder:
            // transformers' CLIPTextConfig in every layout: kept as it is (parsing it succeeded, so it is there).
            return (checkpoint.component(p.component)!.config!, "CLIPTextModelWithProjection", "model.safetensors")
        }
    }

    /// Checks that every update of `lora` lands on a weight of the planned output, before anything is written.
    public static func check(_ lora: LoRAFusion?, against plans: [ComponentImportPlan], in checkpoint: Checkpoint)
        throws
    {
        guard let lora else { return }
        for component in LoRA.components where lora.lora.pairs[component] != nil {
            guard let p = plans.first(where: { $0.part.rawValue == component }) else {
                try lora.lora.refuseAbsent(component, in: checkpoint.path)
                continue
            }
            try lora.lora.check(
                shapes: Dictionary(p.view.infos.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a }),
                component: component)
        }
    }

    /// A component's tensors under canonical names, graph parameters only, with `lora` fused in when it has updates
    /// for the component; read lazily, one at a time.
    public static func source(_ p: ComponentImportPlan, lora: LoRAFusion?) -> any TensorSource {
        let wanted = Set(p.specs.map(\.key))
        var view: any TensorSource = Subset(source: p.view, infos: p.view.infos.filter { wanted.contains($0.name) })
        if let lora, lora.lora.pairs[p.part.rawValue] != nil {
            view = LoRAFusedSource(base: view, fusion: lora, component: p.part.rawValue)
        }
        return view
    }

    /// The folder holding the tokenizer files: diffusers' tokenizer/, or open-muse's files beside the text encoder.
    public static func tokenizerFolder(_ checkpoint: Checkpoint) -> String? {
        let fm = FileManager.default
        return [
            checkpoint.component("tokenizer")?.folder ?? checkpoint.path + "/tokenizer",
            checkpoint.path + "/text_encoder",
        ]
        .first { fm.fileExists(atPath: $0 + "/vocab.json") && fm.fileExists(atPath: $0 + "/merges.txt") }
    }

    /// The sampling settings the checkpoint recommends (`model_index.json`'s `_amused_defaults`), checked.
    public static func samplingDefaults(_ checkpoint: Checkpoint) throws(BindError) -> SamplingDefaults? {
        try checkpoint.modelIndex?[SamplingDefaults.modelIndexKey].map { value throws(BindError) in
            try SamplingDefaults(json: value, path: checkpoint.path + "/model_index.json")
        }
    }

    /// The scheduler config: diffusers' own, or (open-muse has none) one made from the transformer's mask id.
    public static func schedulerConfig(_ checkpoint: Checkpoint, transformer uvit: UVit2DConfig?) -> JSONValue? {
        let schedulerSource = checkpoint.components.first { $0.name == "scheduler" }?.config
        let transformerConfig = checkpoint.components.first { $0.name == "transformer" }?.config
        guard
            let maskId = schedulerSource?["mask_token_id"]?.intValue ?? transformerConfig?["mask_token_id"]?.intValue
                ?? uvit.map({ $0.vocabSize - 1 })
        else { return nil }
        var s = JSONObject()
        s.insert("_class_name", .string("AmusedScheduler"))
        s.insert("_diffusers_version", .string(diffusersVersion))
        s.insert("mask_token_id", .number(String(maskId)))
        s.insert("masking_schedule", .string(schedulerSource?["masking_schedule"]?.stringValue ?? "cosine"))
        return .object(s)
    }

    /// `json.dumps(value, indent=2, sort_keys=True)`, the way diffusers writes configs.
    public static func pythonJSON(_ value: JSONValue, depth: Int = 0) -> String {
        let pad = String(repeating: "  ", count: depth + 1), close = String(repeating: "  ", count: depth)
        switch value {
        case .array(let a):
            if a.isEmpty { return "[]" }
            return "[\n" + a.map { pad + pythonJSON($0, depth: depth + 1) }.joined(separator: ",\n") + "\n" + close
                + "]"
        case .object(let o):
            if o.entries.isEmpty { return "{}" }
            return "{\n"
                + o.entries.sorted { $0.key < $1.key }
                .map { pad + JSONValue.quote($0.key) + ": " + pythonJSON($0.value, depth: depth + 1) }
                .joined(separator: ",\n") + "\n" + close + "}"
        default:
            return value.serialized
        }
    }
}

/// A component's tensors with a LoRA fused into the weights it updates, each written back in its own dtype.
struct LoRAFusedSource: TensorSource {
    let base: any TensorSource
    let fusion: LoRAFusion
    let component: String
    var infos: [TensorInfo] { base.infos }
    var path: String { base.path }
    var format: WeightFormat { base.format }

    func tensor(named name: String) throws(ReadError) -> Tensor {
        let t = try base.tensor(named: name)
        guard let pair = fusion.lora.pair(name, component: component) else { return t }
        do {
            let fused = try fusion.lora.fused(t, pair, component: component, scale: fusion.scale)
            return t.dtype == .f32 ? fused : try fused.converted(to: t.dtype)
        } catch {
            throw ReadError(
                .inconsistent, path: fusion.lora.path, field: component + "." + name,
                (error as? LocalizedError)?.errorDescription ?? "\(error)")
        }
    }
}

/// Some of a source's tensors.
struct Subset: TensorSource {
    let source: any TensorSource
    let infos: [TensorInfo]
    var path: String { source.path }
    var format: WeightFormat { source.format }
    func tensor(named name: String) throws(ReadError) -> Tensor { try source.tensor(named: name) }
}
