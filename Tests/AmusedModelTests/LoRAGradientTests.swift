// The masked-token loss and its LoRA gradients against torch autograd (Fixtures/records/<model>/finetune, made by
// Tools/lora_grad_records.py with PEFT on the same tokens, masks and text), and a finite-difference check.

import AmusedBind
import AmusedModel
import AmusedRead
import AmusedTestSupport
import Testing

/// A finetune record: the torch-side inputs, the adapters and the expected values.
struct FinetuneRecord {
    let source: any TensorSource
    let meta: JSONValue
    let transformer: UVit2DModel
    let config: UVit2DConfig

    let textEncoder: CLIPTextModel?

    /// The record `finetune` (transformer adapters only) or `finetune-text` (text encoder adapters as well) of `name`.
    init(_ name: String, folder: String = "finetune") throws {
        source = try openWeights(path: FixturePaths.path("records/\(name)/\(folder)/finetune.safetensors"))
        meta = try FixturePaths.json("records/\(name)/\(folder)/finetune.json")
        let model = FixturePaths.repo + "/" + (meta["model_path"]?.stringValue ?? "")
        let components = try AmusedComponents(path: model, only: [.transformer, .textEncoder])
        transformer = try #require(components.transformer)
        textEncoder = components.textEncoder
        config = transformer.config
    }

    /// The text encoder's adapters stored under `prefix`/text.
    func textAdapters(_ prefix: String) throws -> LoRAAdapters {
        let c = try #require(textEncoder).config
        var values: [String: (a: [Float], b: [Float])] = [:]
        for t in try LoRAAdapters.targets(c) {
            values[t.module] = (
                try floats("\(prefix)/text/\(t.module).lora_A.weight"),
                try floats("\(prefix)/text/\(t.module).lora_B.weight")
            )
        }
        return try LoRAAdapters(textConfig: c, rank: rank, alpha: alpha, values: values)
    }

    func floats(_ name: String) throws -> [Float] { try source.tensor(named: name).floats() }

    var rank: Int { Int(meta["lora"]?["r"]?.doubleValue ?? 0) }
    var alpha: Float { Float(meta["lora"]?["lora_alpha"]?.doubleValue ?? 0) }

    /// The adapters stored under `prefix` (`init`, `step1`, `step10`; `grad` for the gradients).
    func adapters(_ prefix: String) throws -> LoRAAdapters {
        var values: [String: (a: [Float], b: [Float])] = [:]
        for t in try LoRAAdapters.targets(config) {
            values[t.module] = (
                try floats("\(prefix)/\(t.module).lora_A.weight"),
                try floats("\(prefix)/\(t.module).lora_B.weight")
            )
        }
        return try LoRAAdapters(config: config, rank: rank, alpha: alpha, values: values)
    }

    /// The batch of training step `step` (1-based).
    func batch(step: Int) throws -> MaskedTokenBatch {
        let ids = try source.tensor(named: "step\(step)/input_ids")
        return MaskedTokenBatch(
            batch: ids.shape[0], height: ids.shape[1], width: ids.shape[2],
            inputIds: try ids.int64s(), labels: try source.tensor(named: "step\(step)/labels").int64s(),
            encoderHiddenStates: try floats("encoder_hidden_states"),
            pooledTextEmb: try floats("pooled_text_emb"), microConds: try floats("micro_conds"))
    }
}

/// ‖a − b‖ / ‖b‖.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var d: Double = 0, n: Double = 0
    for i in a.indices {
        d += Double(a[i] - b[i]) * Double(a[i] - b[i])
        n += Double(b[i]) * Double(b[i])
    }
    return Float((d / max(n, 1e-30)).squareRoot())
}

/// Every record: 256-structure (tiny-256), 512-structure with down/upsampling (tiny-512), biases and gain-free norms
/// (tiny-variant), and the trained default.
let finetuneRecords = ["tiny-256", "tiny-512", "tiny-variant", "shapes-64"]

@Suite("LoRA gradients")
struct LoRAGradientTests {
    /// The first step's loss and every gradient of A and B match torch autograd. 1e-4 relative (L2 over each
    /// tensor): float32 summation-order differences between two correct implementations reach 4e-5 here on tensors
    /// whose gradient is small; a wrong term in any backward pass (a missing residual, a transposed product, the AdaLN
    /// scale dropped) is ≥ 1e-2.
    @Test(arguments: finetuneRecords)
    func gradientsMatchAutograd(_ name: String) throws {
        let r = try FinetuneRecord(name)
        let lora = try r.adapters("init")
        let (loss, grads) = try r.transformer.maskedTokenLoss(try r.batch(step: 1), lora: lora)
        let expectedLoss = try #require(r.meta["losses"]?.arrayValue?.first?.doubleValue)
        #expect(abs(Double(loss) - expectedLoss) <= 1e-5 * expectedLoss, "\(name): loss \(loss) vs \(expectedLoss)")
        let g = try #require(grads)
        var worst: Float = 0
        for (i, adapter) in lora.adapters.enumerated() {
            let ea = try r.floats("grad/\(adapter.module).lora_A.weight")
            let eb = try r.floats("grad/\(adapter.module).lora_B.weight")
            let (da, db) = (relativeError(g.a[i], ea), relativeError(g.b[i], eb))
            worst = max(worst, da, db)
            #expect(da <= 1e-4, "\(name) \(adapter.module).lora_A: \(da)")
            #expect(db <= 1e-4, "\(name) \(adapter.module).lora_B: \(db)")
        }
        print(
            "\(name): loss \(loss) (torch \(expectedLoss)); worst gradient error \(worst) over \(lora.adapters.count) adapters"
        )
    }

    /// With the text encoder trained too (train_amused.py --train_text_encoder --text_encoder_use_lora): the loss,
    /// the transformer's and the text encoder's LoRA gradients against torch autograd, within the same 1e-4. These
    /// flow through every cross-attention's keys and values and every AdaLN / ConvNext modulation into CLIP's causal
    /// attention, LayerNorms and quick_gelu MLPs.
    /// tiny-variant has a one-layer CLIP with exact GELU (hidden_states[-2] is the embeddings), biases and gain-free
    /// norms in the transformer.
    @Test(arguments: ["tiny-256", "tiny-512", "tiny-variant", "shapes-64"])
    func textEncoderGradientsMatchAutograd(_ name: String) throws {
        let r = try FinetuneRecord(name, folder: "finetune-text")
        let lora = try r.adapters("init"), textLoRA = try r.textAdapters("init")
        let ids = try r.source.tensor(named: "text_ids").int64s()
        let (loss, grads, textGrads) = try r.transformer.maskedTokenLoss(
            try r.batch(step: 1), lora: lora, textEncoder: try #require(r.textEncoder), textIds: ids, textLoRA: textLoRA
        )
        let expectedLoss = try #require(r.meta["losses"]?.arrayValue?.first?.doubleValue)
        #expect(abs(Double(loss) - expectedLoss) <= 1e-5 * expectedLoss, "\(name): loss \(loss) vs \(expectedLoss)")
        var worst: Float = 0
        for (set, adapters, g, prefix) in [
            ("transformer", lora, grads, "grad/"), ("text encoder", textLoRA, textGrads, "grad/text/"),
        ] {
            for (i, adapter) in adapters.adapters.enumerated() {
                let da = relativeError(g.a[i], try r.floats("\(prefix)\(adapter.module).lora_A.weight"))
                let db = relativeError(g.b[i], try r.floats("\(prefix)\(adapter.module).lora_B.weight"))
                worst = max(worst, da, db)
                #expect(da <= 1e-4 && db <= 1e-4, "\(name) \(set) \(adapter.module): A \(da), B \(db)")
            }
        }
        print(
            "\(name) with the text encoder: worst gradient error \(worst) over \(lora.adapters.count) + "
                + "\(textLoRA.adapters.count) adapters")
    }

    /// The same gate fails when the model is wrong: with one adapter's B perturbed by 1%, the gradients of other
    /// adapters move by far more than the 1e-4 tolerance.
    @Test func gateCatchesAPerturbedModel() throws {
        let r = try FinetuneRecord("tiny-256")
        var lora = try r.adapters("init")
        let last = lora.adapters.count - 1
        lora.adapters[last].b = lora.adapters[last].b.map { $0 * 1.01 }
        let (_, grads) = try r.transformer.maskedTokenLoss(try r.batch(step: 1), lora: lora)
        let g = try #require(grads)
        let errors = try lora.adapters.indices.map { i in
            relativeError(g.a[i], try r.floats("grad/\(lora.adapters[i].module).lora_A.weight"))
        }
        #expect(errors.max()! > 1e-3)
    }

    /// Central differences of the loss along random directions of A and B agree with the analytic directional
    /// derivative (within 2%: float32 differences with a step of 1e-2 carry ~1e-3 relative rounding and curvature).
    @Test func finiteDifferencesAgree() throws {
        let r = try FinetuneRecord("tiny-512")
        let lora = try r.adapters("init")
        let batch = try r.batch(step: 1)
        let (_, grads) = try r.transformer.maskedTokenLoss(batch, lora: lora)
        let g = try #require(grads)
        var rng = TorchGenerator(seed: 7)
        for (i, part) in [(0, "a"), (lora.adapters.count / 2, "b"), (lora.adapters.count - 1, "a")] {
            let count = part == "a" ? lora.adapters[i].a.count : lora.adapters[i].b.count
            let direction = (0..<count).map { _ in rng.nextUniform() * 2 - 1 }
            let analytic = zip(direction, part == "a" ? g.a[i] : g.b[i]).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            func loss(_ step: Float) throws -> Float {
                var moved = lora
                if part == "a" {
                    for j in 0..<count { moved.adapters[i].a[j] += step * direction[j] }
                } else {
                    for j in 0..<count { moved.adapters[i].b[j] += step * direction[j] }
                }
                return try r.transformer.maskedTokenLoss(batch, lora: moved, gradients: false).loss
            }
            let h: Float = 1e-2
            let numeric = (try loss(h) - loss(-h)) / (2 * h)
            #expect(
                abs(numeric - analytic) <= 0.02 * max(abs(analytic), 1e-2),
                "\(lora.adapters[i].module).\(part): numeric \(numeric), analytic \(analytic)")
        }
    }
}
