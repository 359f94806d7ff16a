// Importing a checkpoint of any supported layout (open-muse folders above all) into a diffusers pipeline folder:
// names through the shipped maps, configs translated onto diffusers' schemas, tensors streamed one at a time into
// safetensors (dtypes kept), tokenizer files copied, and a report of what was mapped, dropped or allowed. Everything
// is checked before the first byte is written; the folder is built beside the destination and renamed into place.

import AmusedMap
import AmusedModel
import AmusedRead
import AmusedTensors
import Foundation

/// What an export did, written as `amused-import.json` into the output folder.
public struct ExportReport: Sendable {
    /// The source checkpoint.
    public let source: String
    /// Its detected layout.
    public let layout: Checkpoint.Layout
    /// The import plan per component.
    public let plans: [ComponentImportPlan]
    /// Whether the user allowed unmapped tensors (they are then left out and listed here).
    public let allowedUnmapped: Bool
    /// Whether the user allowed missing parameters (the output then lacks them, listed here).
    public let allowedMissing: Bool
    /// Tensors written, per output component.
    public let written: [String: Int]
    /// The LoRA fused into the output, if any.
    public var lora: LoRAFusion? = nil

    /// The report as JSON.
    public var json: JSONValue {
        var o = JSONObject()
        o.insert("format", .string("amused-import-report"))
        o.insert("version", .number("1"))
        o.insert("source", .string(source))
        o.insert("layout", .string(layout.rawValue))
        o.insert("allow_unmapped", .bool(allowedUnmapped))
        o.insert("allow_missing", .bool(allowedMissing))
        if let lora {
            var l = JSONObject()
            l.insert("file", .string(lora.lora.path))
            l.insert("scale", .number(String(lora.scale)))
            l.insert("alpha_in_file", .bool(lora.lora.hasAlpha))
            for (component, pairs) in lora.lora.pairs.sorted(by: { $0.key < $1.key }) {
                l.insert(component + "_weights_updated", .number(String(pairs.count)))
            }
            o.insert("lora", .object(l))
        }
        o.insert("components", .array(plans.map { p in
            var c = JSONObject()
            c.insert("component", .string(p.component))
            c.insert("written_as", .string(DiffusersExport.folderName(p.part)))
            c.insert("map", .string(p.map))
            var counts = JSONObject()
            for (k, v) in p.ledger.counts.sorted(by: { $0.key < $1.key }) { counts.insert(k, .number(String(v))) }
            c.insert("ledger", .object(counts))
            c.insert("dropped", .array(p.ledger.entries.filter { $0.kind == .dropped }.flatMap { e in
                e.sources.map { JSONValue.string($0 + (e.detail.map { " (\($0))" } ?? "")) }
            }))
            c.insert("unmapped_left_out", .array(p.unmapped.map(JSONValue.string)))
            c.insert("missing", .array(p.missing.map { JSONValue.string($0.key) }))
            c.insert("tensors_written", .number(String(written[DiffusersExport.folderName(p.part)] ?? 0)))
            return .object(c)
        }))
        return .object(o)
    }
}

/// Writes a checkpoint as a diffusers `AmusedPipeline` folder.
public enum DiffusersExport {
    /// The diffusers version whose config schemas the output follows.
    public static let diffusersVersion = "0.35.2"

    /// The diffusers folder name of a part.
    public static func folderName(_ part: AmusedComponents.Part) -> String { part.rawValue }

    /// Checks `checkpoint` completely (every tensor mapped or dropped by a rule, every parameter present with its
    /// shape), unless `allowUnmapped` lets unmapped tensors be left out or `allowMissing` lets parameters be absent.
    /// Throws the first problem, naming the key.
    public static func check(_ checkpoint: Checkpoint, allowUnmapped: Bool = false,
                             allowMissing: Bool = false) throws -> [ComponentImportPlan] {
        let plans = try importPlan(checkpoint)
        guard !plans.isEmpty else {
            throw BindError(.missing, path: checkpoint.path, "no transformer, VQ-GAN or text encoder weights found")
        }
        for p in plans {
            let path = checkpoint.component(p.component)?.weights?.path ?? checkpoint.path
            if let m = p.misshapen.first {
                throw BindError(.shape, path: path, key: m.key, "shape \(describeShape(m.found)) after mapping, "
                                + "\(describeShape(m.expected)) implied by the config")
            }
            if let m = p.missing.first, !allowMissing {
                throw BindError(.missing, path: path, key: m.key, "the config implies this parameter with shape "
                                + "\(describeShape(m.shape)) but no source tensor provides it (\(p.missing.count) missing); "
                                + "--allow-missing writes the folder without them, recorded in the report")
            }
            if let u = p.unmapped.first, !allowUnmapped {
                throw BindError(.unused, path: path, key: u, "no rule of map \(p.map) consumes this tensor "
                                + "(\(p.unmapped.count) unmapped); pass --allow-unmapped to leave such tensors out, "
                                + "recorded in the report")
            }
        }
        return plans
    }

    /// Exports `checkpoint` to a new folder `out` (which must not exist). Returns the report also written there.
    @discardableResult
    public static func write(_ checkpoint: Checkpoint, to out: String, allowUnmapped: Bool = false,
                             allowMissing: Bool = false, lora: LoRAFusion? = nil) throws -> ExportReport {
        let plans = try check(checkpoint, allowUnmapped: allowUnmapped, allowMissing: allowMissing)
        try check(lora, against: plans, in: checkpoint)
        let fm = FileManager.default
        guard !fm.fileExists(atPath: out) else {
            throw BindError(.config, path: out, "the output folder exists already; choose a new path")
        }
        let parent = (out as NSString).deletingLastPathComponent
        let staging = (parent.isEmpty ? "." : parent) + "/." + (out as NSString).lastPathComponent + ".partial-"
            + UUID().uuidString
        do {
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        } catch {
            throw BindError(.config, path: staging, "cannot create the output folder: \(error.localizedDescription)")
        }
        var succeeded = false
        defer { if !succeeded { try? fm.removeItem(atPath: staging) } }

        var written: [String: Int] = [:]
        var index = JSONObject()
        index.insert("_class_name", .string("AmusedPipeline"))
        index.insert("_diffusers_version", .string(diffusersVersion))
        var uvit: UVit2DConfig?
        for p in plans {
            let folder = staging + "/" + folderName(p.part)
            try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let (config, className, weightsFile) = canonicalConfig(p, checkpoint)
            if case .transformer(let u) = p.graph.config { uvit = u }
            index.insert(p.part.rawValue, .array([.string(p.part == .textEncoder ? "transformers" : "diffusers"),
                                                  .string(className)]))
            try writeText(pythonJSON(config) + "\n", to: folder + "/config.json")
            let view = source(p, lora: lora)
            try SafetensorsWriter.write(source: view, metadata: [("format", "pt")], to: folder + "/" + weightsFile)
            written[folderName(p.part)] = view.infos.count
        }
        let tokenizerFolder = tokenizerFolder(checkpoint)
        if let tokenizerFolder {
            try fm.createDirectory(atPath: staging + "/tokenizer", withIntermediateDirectories: true)
            for file in tokenizerFiles where fm.fileExists(atPath: tokenizerFolder + "/" + file) {
                try fm.copyItem(atPath: tokenizerFolder + "/" + file, toPath: staging + "/tokenizer/" + file)
            }
            index.insert("tokenizer", .array([.string("transformers"), .string("CLIPTokenizer")]))
        }
        if let s = schedulerConfig(checkpoint, transformer: uvit) {
            try fm.createDirectory(atPath: staging + "/scheduler", withIntermediateDirectories: true)
            try writeText(pythonJSON(s) + "\n", to: staging + "/scheduler/scheduler_config.json")
            index.insert("scheduler", .array([.string("diffusers"), .string("AmusedScheduler")]))
        }
        if let defaults = try samplingDefaults(checkpoint) {
            index.insert(SamplingDefaults.modelIndexKey, defaults.json)
        }
        if plans.count > 1 || tokenizerFolder != nil {
            try writeText(pythonJSON(.object(index)) + "\n", to: staging + "/model_index.json")
        }
        var report = ExportReport(source: checkpoint.path, layout: checkpoint.layout, plans: plans,
                                  allowedUnmapped: allowUnmapped, allowedMissing: allowMissing, written: written)
        report.lora = lora
        try writeText(pythonJSON(report.json) + "\n", to: staging + "/amused-import.json")
        guard rename(staging, out) == 0 else {
            throw BindError(.config, path: out, "cannot move the finished folder into place (errno \(errno))")
        }
        succeeded = true
        return report
    }

    /// diffusers' `UVit2DModel` config; float fields keep the source's spelling when it has them.
    /// The tokenizer files a pipeline carries (vocab.json and merges.txt are required, the others optional).
    public static let tokenizerFiles = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]

    /// A component's config on diffusers' / transformers' schema, its class name and diffusers weights file name.
    public static func canonicalConfig(_ p: ComponentImportPlan, _ checkpoint: Checkpoint)
        -> (config: JSONValue, className: String, weightsFile: String)
    {
        switch p.graph.config {
        case .transformer(let u):
            return (diffusersConfig(u, source: checkpoint.component(p.component)?.config), "UVit2DModel",
                    "diffusion_pytorch_model.safetensors")
        case .vqvae(let v): return (diffusersConfig(v), "VQModel", "diffusion_pytorch_model.safetensors")
        case .textEncoder:
            // transformers' CLIPTextConfig in every layout: kept as it is (parsing it succeeded, so it is there).
            return (checkpoint.component(p.component)!.config!, "CLIPTextModelWithProjection", "model.safetensors")
        }
    }

    /// Checks that every update of `lora` lands on a weight of the planned output, before anything is written.
    public static func check(_ lora: LoRAFusion?, against plans: [ComponentImportPlan], in checkpoint: Checkpoint) throws {
        guard let lora else { return }
        for component in LoRA.components where lora.lora.pairs[component] != nil {
            guard let p = plans.first(where: { $0.part.rawValue == component }) else {
                try lora.lora.refuseAbsent(component, in: checkpoint.path)
                continue
            }
            try lora.lora.check(shapes: Dictionary(p.view.infos.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a }),
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
        return [checkpoint.component("tokenizer")?.folder ?? checkpoint.path + "/tokenizer", checkpoint.path + "/text_encoder"]
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
        guard let maskId = schedulerSource?["mask_token_id"]?.intValue ?? transformerConfig?["mask_token_id"]?.intValue
            ?? uvit.map({ $0.vocabSize - 1 }) else { return nil }
        var s = JSONObject()
        s.insert("_class_name", .string("AmusedScheduler"))
        s.insert("_diffusers_version", .string(diffusersVersion))
        s.insert("mask_token_id", .number(String(maskId)))
        s.insert("masking_schedule", .string(schedulerSource?["masking_schedule"]?.stringValue ?? "cosine"))
        return .object(s)
    }

    static func diffusersConfig(_ c: UVit2DConfig, source: JSONValue?) -> JSONValue {
        var o = JSONObject()
        let float = { (key: String, fallback: String) -> JSONValue in
            if case .number(let text)? = source?[key] { return .number(text) }
            return .number(fallback)
        }
        o.insert("_class_name", .string("UVit2DModel"))
        o.insert("_diffusers_version", .string(diffusersVersion))
        o.insert("attention_dropout", float("attention_dropout", "0.0"))
        o.insert("block_num_heads", .number(String(c.blockNumHeads)))
        o.insert("block_out_channels", .number(String(c.blockOutChannels)))
        o.insert("codebook_size", .number(String(c.codebookSize)))
        o.insert("cond_embed_dim", .number(String(c.condEmbedDim)))
        o.insert("downsample", .bool(c.downsample))
        o.insert("encoder_hidden_size", .number(String(c.encoderHiddenSize)))
        o.insert("hidden_dropout", float("hidden_dropout", "0.0"))
        o.insert("hidden_size", .number(String(c.hiddenSize)))
        o.insert("in_channels", .number(String(c.inChannels)))
        o.insert("intermediate_size", .number(String(c.intermediateSize)))
        o.insert("layer_norm_eps", float("layer_norm_eps", "1e-06"))
        o.insert("ln_elementwise_affine", .bool(c.lnElementwiseAffine))
        o.insert("micro_cond_embed_dim", .number(String(c.microCondEmbedDim)))
        o.insert("micro_cond_encode_dim", .number(String(c.microCondEncodeDim)))
        o.insert("num_attention_heads", .number(String(c.numAttentionHeads)))
        o.insert("num_hidden_layers", .number(String(c.numHiddenLayers)))
        o.insert("num_res_blocks", .number(String(c.numResBlocks)))
        o.insert("sample_size", .number(String(c.sampleSize)))
        o.insert("upsample", .bool(c.upsample))
        o.insert("use_bias", .bool(c.useBias))
        o.insert("vocab_size", .number(String(c.vocabSize)))
        return .object(o)
    }

    /// diffusers' `VQModel` config (`sample_size`, `scaling_factor`, `force_upcast` at diffusers' defaults: aMUSEd
    /// does not use them).
    static func diffusersConfig(_ c: VQModelConfig) -> JSONValue {
        var o = JSONObject()
        let n = c.blockOutChannels.count
        o.insert("_class_name", .string("VQModel"))
        o.insert("_diffusers_version", .string(diffusersVersion))
        o.insert("act_fn", .string("silu"))
        o.insert("block_out_channels", .array(c.blockOutChannels.map { .number(String($0)) }))
        o.insert("down_block_types", .array(Array(repeating: .string("DownEncoderBlock2D"), count: n)))
        o.insert("force_upcast", .bool(true))
        o.insert("in_channels", .number(String(c.inChannels)))
        o.insert("latent_channels", .number(String(c.latentChannels)))
        o.insert("layers_per_block", .number(String(c.layersPerBlock)))
        o.insert("lookup_from_codebook", .bool(c.lookupFromCodebook))
        o.insert("mid_block_add_attention", .bool(c.midBlockAddAttention))
        o.insert("norm_num_groups", .number(String(c.normNumGroups)))
        o.insert("norm_type", .string("group"))
        o.insert("num_vq_embeddings", .number(String(c.numVqEmbeddings)))
        o.insert("out_channels", .number(String(c.outChannels)))
        o.insert("sample_size", .number("32"))
        o.insert("scaling_factor", .number("0.18215"))
        o.insert("up_block_types", .array(Array(repeating: .string("UpDecoderBlock2D"), count: n)))
        // null means latent_channels, as the released configs say it (taming's quantized_embed_dim equals z_channels).
        o.insert("vq_embed_dim", c.vqEmbedDim.flatMap { $0 == c.latentChannels ? nil : .number(String($0)) } ?? .null)
        return .object(o)
    }

    /// `json.dumps(value, indent=2, sort_keys=True)`, the way diffusers writes configs.
    public static func pythonJSON(_ value: JSONValue, depth: Int = 0) -> String {
        let pad = String(repeating: "  ", count: depth + 1), close = String(repeating: "  ", count: depth)
        switch value {
        case .array(let a):
            if a.isEmpty { return "[]" }
            return "[\n" + a.map { pad + pythonJSON($0, depth: depth + 1) }.joined(separator: ",\n") + "\n" + close + "]"
        case .object(let o):
            if o.entries.isEmpty { return "{}" }
            return "{\n" + o.entries.sorted { $0.key < $1.key }
                .map { pad + JSONValue.quote($0.key) + ": " + pythonJSON($0.value, depth: depth + 1) }
                .joined(separator: ",\n") + "\n" + close + "}"
        default:
            return value.serialized
        }
    }

    static func writeText(_ text: String, to path: String) throws {
        do {
            let w = try AtomicFileWriter(destination: path)
            try w.write(Array(text.utf8))
            try w.commit()
        } catch {
            throw BindError(.config, path: path, "cannot write: \(error)")
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
            throw ReadError(.inconsistent, path: fusion.lora.path, field: component + "." + name,
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
