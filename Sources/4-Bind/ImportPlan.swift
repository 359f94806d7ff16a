// The import plan of a checkpoint, from names, shapes and configs alone (no tensor data read): which map each
// component goes through, what it renames, transforms and drops, and what is unmapped, missing or misshapen
// against the graph the config implies. `amused inspect --map` prints it.

import AmusedCore
import AmusedMap
import AmusedModel
import AmusedRead

/// How one model component of a checkpoint meets the graph: its config (translated from open-muse / taming where
/// the layout says so), the parameters that config implies, and the name map its tensors go through. Loading,
/// planning and exporting all decide this here.
public struct ComponentGraph: Sendable {
    /// A component's canonical config.
    public enum Config: Sendable {
        /// UVit2DModel.
        case transformer(UVit2DConfig)
        /// VQModel.
        case vqvae(VQModelConfig)
        /// CLIPTextModelWithProjection.
        case textEncoder(CLIPTextConfig)
    }

    /// Which part of the pipeline it is.
    public let part: AmusedComponents.Part
    /// Its config.
    public let config: Config
    /// The graph parameters the config implies, in graph order.
    public let specs: [ParameterSpec]
    /// The shipped name map its tensors go through.
    public let map: String
    /// The map's named values (`last` = the last VQ level).
    public let constants: [String: Int]

    /// Class names of each model part, diffusers' and open-muse's.
    static let classes: [AmusedComponents.Part: [String]] = [
        .transformer: ["UVit2DModel", "MaskGiTUViT_v2", "MaskGiTUViT"], .vqvae: ["VQModel", "VQGANModel"],
        .textEncoder: ["CLIPTextModelWithProjection"],
    ]
    /// Component names of each model part.
    static let names: [AmusedComponents.Part: [String]] = [
        .transformer: ["transformer"], .vqvae: ["vqvae", "vae"], .textEncoder: ["text_encoder"],
    ]

    /// Whether `c` is the model part `part` (by component name or config class).
    public static func isPart(_ part: AmusedComponents.Part, _ c: CheckpointComponent) -> Bool {
        names[part]?.contains(c.name) == true || classes[part]?.contains(c.className ?? "") == true
    }

    /// The graph of `c` read in `layout`, or nil when `c` is not a model component (a tokenizer, a scheduler).
    public init?(_ c: CheckpointComponent, layout: Checkpoint.Layout) throws {
        let openMuse = layout == .openMuse
        let path = c.configPath ?? c.weights?.path ?? c.name
        if Self.isPart(.transformer, c) {
            let config =
                openMuse
                ? try UVit2DConfig(openMuse: c.config, path: path) : try UVit2DConfig(json: c.config, path: path)
            (part, self.config, specs) = (.transformer, .transformer(config), try UVit2DModel.parameterSpecs(config))
            map = openMuse ? "open-muse-transformer" : "diffusers-transformer"
            constants = [:]
        } else if Self.isPart(.vqvae, c) {
            let config =
                openMuse
                ? try VQModelConfig(taming: c.config, path: path) : try VQModelConfig(json: c.config, path: path)
            (part, self.config, specs) = (.vqvae, .vqvae(config), try VQModel.parameterSpecs(config))
            map = openMuse ? "taming-vqgan" : "diffusers-vqvae"
            constants = ["last": config.blockOutChannels.count - 1]
        } else if Self.isPart(.textEncoder, c) {
            let config = try CLIPTextConfig(json: c.config, path: path)
            (part, self.config, specs) = (.textEncoder, .textEncoder(config), try CLIPTextModel.parameterSpecs(config))
            map = "clip-text"  // with or without the text_model. prefix; an old position_ids buffer is dropped by rule
            constants = [:]
        } else {
            return nil
        }
    }
}

/// How one component of a checkpoint maps onto the graph.
public struct ComponentImportPlan: Sendable {
    /// The component (`transformer`, `vqvae`/`vae`, `text_encoder`).
    public let component: String
    /// Config, parameters and map.
    public let graph: ComponentGraph
    /// The map's ledger.
    public let ledger: MapLedger
    /// Graph parameters no source tensor provides.
    public let missing: [ParameterSpec]
    /// Source tensors (after mapping) the graph has no parameter for.
    public let unmapped: [String]
    /// Parameters whose shape differs: key, expected, found.
    public let misshapen: [(key: String, expected: [Int], found: [Int])]
    /// Parameters provided as the graph expects them.
    public let matched: Int
    /// The source under canonical names (through the map, unmapped tensors left out), tensors read lazily.
    public let view: any TensorSource

    /// The name map used.
    public var map: String { graph.map }
    /// Which part of the pipeline the component is.
    public var part: AmusedComponents.Part { graph.part }
    /// The graph parameters the config implies, in graph order.
    public var specs: [ParameterSpec] { graph.specs }
    /// True when nothing is missing, unmapped or misshapen.
    public var isComplete: Bool { missing.isEmpty && unmapped.isEmpty && misshapen.isEmpty }
}

/// Plans the import of every model component of `checkpoint` without reading tensor data.
public func importPlan(_ checkpoint: Checkpoint) throws -> [ComponentImportPlan] {
    var plans: [ComponentImportPlan] = []
    for c in checkpoint.components {
        guard let source = c.weights, let graph = try ComponentGraph(c, layout: checkpoint.layout) else { continue }
        let specs = graph.specs
        let view = try MappedSource(
            source, map: try NameMap.shipped(graph.map), constants: graph.constants,
            allowUnmapped: true)
        let provided = Dictionary(view.infos.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        let wanted = Set(specs.map(\.key))
        var misshapen: [(String, [Int], [Int])] = []
        var matched = 0
        for spec in specs {
            guard let shape = provided[spec.key] else { continue }
            if shape == spec.shape { matched += 1 } else { misshapen.append((spec.key, spec.shape, shape)) }
        }
        plans.append(
            ComponentImportPlan(
                component: c.name, graph: graph, ledger: view.ledger,
                missing: specs.filter { provided[$0.key] == nil },
                unmapped: view.ledger.unmapped + view.infos.map(\.name).filter { !wanted.contains($0) },
                misshapen: misshapen, matched: matched, view: view))
    }
    return plans
}
