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

    init(_ name: String) throws {
        let folder = FixturePaths.path("records/\(name)/finetune")
        source = try openWeights(path: folder + "/finetune.safetensors")
        meta = try FixturePaths.json("records/\(name)/finetune/finetune.json")
        let model = FixturePaths.repo + "/" + (meta["model_path"]?.stringValue ?? "")
        transformer = try #require(try AmusedComponents(path: model, only: [.transformer]).transformer)
        config = transformer.config
    }

    func floats(_ name: String) throws -> [Float] { try source.tensor(named: name).floats() }

    var rank: Int { Int(meta["lora"]?["r"]?.doubleValue ?? 0) }
    var alpha: Float { Float(meta["lora"]?["lora_alpha"]?.doubleValue ?? 0) }

    /// The adapters stored under `prefix` (`init`, `step1`, `step10`; `grad` for the gradients).
    func adapters(_ prefix: String) throws -> LoRAAdapters {
        var values: [String: (a: [Float], b: [Float])] = [:]
        for t in try LoRAAdapters.targets(config) {
            values[t.module] = (try floats("\(prefix)/\(t.module).lora_A.weight"),
                                try floats("\(prefix)/\(t.module).lora_B.weight"))
        }
        return try LoRAAdapters(config: config, rank: rank, alpha: alpha, values: values)
    }

    /// The batch of training step `step` (1-based).
    func batch(step: Int) throws -> MaskedTokenBatch {
        let ids = try source.tensor(named: "step\(step)/input_ids")
        return MaskedTokenBatch(batch: ids.shape[0], height: ids.shape[1], width: ids.shape[2],
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
    /// tensor): float32 summation-order differences between two correct implementations are ~1e-6 here; a wrong
    /// term in any backward pass (a missing residual, a transposed product, the AdaLN scale dropped) is ≥ 1e-2.
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
        print("\(name): loss \(loss) (torch \(expectedLoss)); worst gradient error \(worst) over \(lora.adapters.count) adapters")
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
            #expect(abs(numeric - analytic) <= 0.02 * max(abs(analytic), 1e-2),
                    "\(lora.adapters[i].module).\(part): numeric \(numeric), analytic \(analytic)")
        }
    }
}
