// The import plan of a checkpoint, from names, shapes and configs alone (no tensor data read): which map each
// component goes through, what it renames, transforms and drops, and what is unmapped, missing or misshapen
// against the graph the config implies. `amused inspect --map` prints it.

import AmusedMap
import AmusedModel
import AmusedRead
import AmusedTensors

/// How one component of a checkpoint maps onto the graph.
public struct ComponentImportPlan: Sendable {
    /// The component (`transformer`, `vqvae`/`vae`, `text_encoder`).
    public let component: String
    /// The name map used, or nil when the names are already canonical.
    public let map: String?
    /// The map's ledger (nil without a map).
    public let ledger: MapLedger?
    /// Graph parameters no source tensor provides.
    public let missing: [ParameterSpec]
    /// Source tensors (after mapping) the graph has no parameter for.
    public let unmapped: [String]
    /// Parameters whose shape differs: key, expected, found.
    public let misshapen: [(key: String, expected: [Int], found: [Int])]
    /// Parameters provided as the graph expects them.
    public let matched: Int
    /// Which part of the pipeline the component is.
    public let part: AmusedComponents.Part
    /// The graph parameters the config implies, in graph order.
    public let specs: [ParameterSpec]
    /// The source under canonical names (through the map, unmapped tensors left out), tensors read lazily.
    public let view: any TensorSource

    /// True when nothing is missing, unmapped or misshapen.
    public var isComplete: Bool { missing.isEmpty && unmapped.isEmpty && misshapen.isEmpty }
}

/// Plans the import of every model component of `checkpoint` without reading tensor data.
public func importPlan(_ checkpoint: Checkpoint) throws -> [ComponentImportPlan] {
    let openMuse = checkpoint.layout == .openMuse
    var plans: [ComponentImportPlan] = []
    for c in checkpoint.components {
        guard let source = c.weights else { continue }
        let specs: [ParameterSpec]
        let part: AmusedComponents.Part
        var mapName: String? = nil
        var constants: [String: Int] = [:]
        switch (c.name, c.className ?? "") {
        case ("transformer", _), (_, "UVit2DModel"), (_, "MaskGiTUViT_v2"), (_, "MaskGiTUViT"):
            let config = openMuse ? try UVit2DConfig(openMuse: c.config, path: c.configPath ?? c.weights?.path ?? c.name)
                : try UVit2DConfig(json: c.config, path: c.configPath ?? c.weights?.path ?? c.name)
            specs = try UVit2DModel.parameterSpecs(config)
            part = .transformer
            mapName = openMuse ? "open-muse-transformer" : "diffusers-transformer"
        case ("vqvae", _), ("vae", _), (_, "VQModel"), (_, "VQGANModel"):
            let config = openMuse ? try VQModelConfig(taming: c.config, path: c.configPath ?? c.weights?.path ?? c.name)
                : try VQModelConfig(json: c.config, path: c.configPath ?? c.weights?.path ?? c.name)
            specs = try VQModel.parameterSpecs(config)
            part = .vqvae
            mapName = openMuse ? "taming-vqgan" : "diffusers-vqvae"
            constants = ["last": config.blockOutChannels.count - 1]
        case ("text_encoder", _), (_, "CLIPTextModelWithProjection"):
            specs = try CLIPTextModel.parameterSpecs(try CLIPTextConfig(json: c.config, path: c.configPath ?? c.weights?.path ?? c.name))
            part = .textEncoder
            // With or without the text_model. prefix; an old position_ids buffer is dropped by rule.
            mapName = "clip-text"
        default:
            continue
        }
        var view: any TensorSource = source
        var ledger: MapLedger? = nil
        if let mapName {
            let mapped = try MappedSource(source, map: try NameMap.shipped(mapName), constants: constants,
                                          allowUnmapped: true)
            ledger = mapped.ledger
            view = mapped
        }
        let provided = Dictionary(view.infos.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        let wanted = Set(specs.map(\.key))
        var misshapen: [(String, [Int], [Int])] = []
        var matched = 0
        for spec in specs {
            guard let shape = provided[spec.key] else { continue }
            if shape == spec.shape { matched += 1 } else { misshapen.append((spec.key, spec.shape, shape)) }
        }
        plans.append(ComponentImportPlan(
            component: c.name, map: mapName, ledger: ledger,
            missing: specs.filter { provided[$0.key] == nil },
            unmapped: (ledger?.unmapped ?? []) + view.infos.map(\.name).filter { !wanted.contains($0) },
            misshapen: misshapen, matched: matched, part: part, specs: specs, view: view))
    }
    return plans
}
