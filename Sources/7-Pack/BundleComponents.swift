// Loading a bundle into the Swift graph: configs from the manifest, strict binding of its tensors (every parameter
// the config implies, nothing else, every shape), quantized weights kept as they are stored — views of the mapped file
// — and the tokenizer from the bundled files.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead

extension AmusedComponents {
    /// Loads the components of `bundle` (all, or those in `only`). `verifyIntegrity` checks every digest first, so a
    /// damaged bundle fails with an `integrity` error naming the tensor instead of running.
    public init(bundle: AmusedBundle, only: Set<Part> = Set(Part.allCases), verifyIntegrity: Bool = true) throws {
        if verifyIntegrity { try bundle.verifyIntegrity() }
        /// Strictly bound weights of component `name` against the parameters its config implies.
        func weights(_ c: BundleComponent, _ specs: [ParameterSpec]) throws -> Weights {
            let byKey = Dictionary(c.tensors.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            let wanted = Set(specs.map(\.key))
            if let extra = c.tensors.first(where: { !wanted.contains($0.key) }) {
                throw BundleError(
                    .inconsistent, path: bundle.path, field: "\(c.name)/\(extra.key)",
                    "the config of \(c.name) has no parameter of this name")
            }
            var dense: [String: Tensor] = [:], quantized: [String: QuantizedTensor] = [:]
            for spec in specs {
                guard let t = byKey[spec.key] else {
                    throw BundleError(
                        .inconsistent, path: bundle.path, field: "\(c.name)/\(spec.key)",
                        "the config implies this parameter with shape \(describeShape(spec.shape)); the bundle lacks it"
                    )
                }
                guard t.shape == spec.shape else {
                    throw BundleError(
                        .inconsistent, path: bundle.path, field: "\(c.name)/\(spec.key)",
                        "shape \(describeShape(t.shape)) in the bundle, \(describeShape(spec.shape)) implied by the config"
                    )
                }
                let q = try bundle.quantized(t)
                if t.scheme == .f32 { dense[spec.key] = q.buffers[0] } else { quantized[spec.key] = q }
            }
            return try Weights(dense, quantized: quantized)
        }
        func config(_ name: String) -> BundleComponent? { bundle.component(name) }
        let at = bundle.path
        var textEncoder: CLIPTextModel? = nil, transformer: UVit2DModel? = nil, vqvae: VQModel? = nil
        if only.contains(.textEncoder), let c = config("text_encoder") {
            let cfg = try CLIPTextConfig(json: c.config, path: at + " [text_encoder config]")
            textEncoder = try CLIPTextModel(
                config: cfg, scope: .binding(try weights(c, try CLIPTextModel.parameterSpecs(cfg))))
        }
        if only.contains(.transformer), let c = config("transformer") {
            let cfg = try UVit2DConfig(json: c.config, path: at + " [transformer config]")
            transformer = try UVit2DModel(
                config: cfg, scope: .binding(try weights(c, try UVit2DModel.parameterSpecs(cfg))))
        }
        if only.contains(.vqvae), let c = config("vqvae") {
            let cfg = try VQModelConfig(json: c.config, path: at + " [vqvae config]")
            vqvae = try VQModel(config: cfg, scope: .binding(try weights(c, try VQModel.parameterSpecs(cfg))))
        }
        var tokenizer: CLIPTokenizer? = nil
        if only.contains(.tokenizer), bundle.files["tokenizer/vocab.json"] != nil {
            tokenizer = try AmusedComponents.loadTokenizer(path: at + " [tokenizer]") { name in
                try bundle.fileBytes("tokenizer/" + name)
            }
        }
        let scheduler = bundle.manifest.scheduler
        self.init(
            source: bundle.path, textEncoder: textEncoder, transformer: transformer, vqvae: vqvae,
            tokenizer: tokenizer, maskTokenId: scheduler?["mask_token_id"]?.intValue,
            maskingSchedule: try AmusedComponents.maskingSchedule(
                scheduler?["masking_schedule"],
                path: at + " [manifest scheduler]"),
            samplingDefaults: bundle.manifest.sampling)
    }
}
