// Training steps against torch (Fixtures/records/<model>/finetune, Tools/lora_grad_records.py): train_amused.py's
// masks from the same seed, AdamW after 1 and 10 steps; the LoRA file and checkpoints.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import AmusedTestSupport
import AmusedTrain
import Foundation
import Testing

/// A finetune record's inputs and expectations (see LoRAGradientTests for the gradient side).
struct StepRecord {
    let source: any TensorSource
    let meta: JSONValue
    let transformer: UVit2DModel
    let textEncoder: CLIPTextModel

    init(_ name: String, folder: String = "finetune") throws {
        source = try openWeights(path: FixturePaths.path("records/\(name)/\(folder)/finetune.safetensors"))
        meta = try FixturePaths.json("records/\(name)/\(folder)/finetune.json")
        let model = FixturePaths.repo + "/" + (meta["model_path"]?.stringValue ?? "")
        let components = try AmusedComponents(path: model, only: [.transformer, .textEncoder])
        transformer = try #require(components.transformer)
        textEncoder = try #require(components.textEncoder)
    }

    func textAdapters(_ prefix: String) throws -> LoRAAdapters {
        let c = textEncoder.config
        var values: [String: (a: [Float], b: [Float])] = [:]
        for t in try LoRAAdapters.targets(c) {
            values[t.module] = (
                try floats("\(prefix)/text/\(t.module).lora_A.weight"),
                try floats("\(prefix)/text/\(t.module).lora_B.weight")
            )
        }
        return try LoRAAdapters(
            textConfig: c, rank: Int(meta["lora"]!["r"]!.doubleValue!),
            alpha: Float(meta["lora"]!["lora_alpha"]!.doubleValue!), values: values)
    }

    func floats(_ name: String) throws -> [Float] { try source.tensor(named: name).floats() }
    func ints(_ name: String) throws -> [Int64] { try source.tensor(named: name).int64s() }

    func adapters(_ prefix: String) throws -> LoRAAdapters {
        let c = transformer.config
        var values: [String: (a: [Float], b: [Float])] = [:]
        for t in try LoRAAdapters.targets(c) {
            values[t.module] = (
                try floats("\(prefix)/\(t.module).lora_A.weight"),
                try floats("\(prefix)/\(t.module).lora_B.weight")
            )
        }
        return try LoRAAdapters(
            config: c, rank: Int(meta["lora"]!["r"]!.doubleValue!),
            alpha: Float(meta["lora"]!["lora_alpha"]!.doubleValue!), values: values)
    }

    func batch(step: Int) throws -> MaskedTokenBatch {
        let ids = try source.tensor(named: "step\(step)/input_ids")
        return MaskedTokenBatch(
            batch: ids.shape[0], height: ids.shape[1], width: ids.shape[2], inputIds: try ids.int64s(),
            labels: try ints("step\(step)/labels"),
            encoderHiddenStates: try floats("encoder_hidden_states"),
            pooledTextEmb: try floats("pooled_text_emb"), microConds: try floats("micro_conds"))
    }

    var settings: AdamWSettings {
        var s = AdamWSettings()
        let o = meta["optimizer"]!
        s.learningRate = o["lr"]!.doubleValue!
        s.beta1 = o["betas"]!.arrayValue![0].doubleValue!
        s.beta2 = o["betas"]!.arrayValue![1].doubleValue!
        s.epsilon = o["eps"]!.doubleValue!
        s.weightDecay = o["weight_decay"]!.doubleValue!
        return s
    }
}

/// ‖a − b‖ / ‖b‖ over all adapters' A and B.
func adapterError(_ a: LoRAAdapters, _ b: LoRAAdapters) -> Float {
    var d: Double = 0, n: Double = 0
    for (x, y) in zip(a.adapters, b.adapters) {
        for (p, q) in zip(x.a + x.b, y.a + y.b) {
            d += Double(p - q) * Double(p - q)
            n += Double(q) * Double(q)
        }
    }
    return Float((d / n).squareRoot())
}

@Suite("fine-tuning steps")
struct FineTuneStepTests {
    /// Seeded like torch.Generator().manual_seed(s), the masking draws exactly the masks train_amused.py's code drew
    /// in the record, for all ten steps (inputs and labels identical).
    @Test(arguments: ["tiny-256", "shapes-64"])
    func masksMatchTorch(_ name: String) throws {
        let r = try StepRecord(name)
        var generator = TorchGenerator(seed: UInt64(r.meta["mask_seed"]!.intValue!))
        let maskId = Int64(r.meta["mask_id"]!.intValue!)
        for step in 1...10 {
            let b = try r.batch(step: step)
            // The unmasked tokens: the label where masked, the input elsewhere.
            let tokens = zip(b.inputIds, b.labels).map { $1 == -100 ? $0 : $1 }
            let (ids, labels) = Masking.mask(tokens, batch: b.batch, maskId: maskId, generator: &generator)
            #expect(ids == b.inputIds, "step \(step)")
            #expect(labels == b.labels, "step \(step)")
        }
    }

    /// Ten AdamW steps reproduce torch.optim.AdamW: every step's loss within 1e-5 relative, the adapters after 1 and
    /// after 10 steps within 1e-5 relative (L2 over all adapters; the gradients agree to ~3e-6, and Adam's update is
    /// lr·m/√v, so their error reaches the adapters scaled by lr).
    @Test(arguments: ["tiny-256", "tiny-512", "tiny-variant", "shapes-64"])
    func adamWStepsMatchTorch(_ name: String) throws {
        let r = try StepRecord(name)
        var lora = try r.adapters("init")
        var optimizer = AdamW(r.settings, for: lora)
        let losses = r.meta["losses"]!.arrayValue!.map { Float($0.doubleValue!) }
        for step in 1...10 {
            let (loss, grads) = try r.transformer.maskedTokenLoss(try r.batch(step: step), lora: lora)
            #expect(abs(loss - losses[step - 1]) <= 1e-5 * losses[step - 1], "\(name) step \(step): \(loss)")
            optimizer.update(&lora, with: try #require(grads))
            if step == 1 || step == 10 {
                let error = adapterError(lora, try r.adapters("step\(step)"))
                #expect(error <= 1e-5, "\(name) after \(step) steps: \(error)")
                // The adapters moved: the comparison is not between two copies of the initial values.
                #expect(adapterError(lora, try r.adapters("init")) > 1e-4)
            }
        }
        #expect(optimizer.step == 10)
    }

    /// The same with the text encoder trained too: ten steps of one AdamW over both sets of adapters (two AdamW
    /// instances here: per-parameter updates do not interact), every loss and both sets after 1 and 10 steps within
    /// 1e-5 relative.
    @Test(arguments: ["tiny-256", "shapes-64"])
    func adamWStepsWithTheTextEncoderMatchTorch(_ name: String) throws {
        let r = try StepRecord(name, folder: "finetune-text")
        var lora = try r.adapters("init"), textLoRA = try r.textAdapters("init")
        var optimizer = AdamW(r.settings, for: lora), textOptimizer = AdamW(r.settings, for: textLoRA)
        let ids = try r.ints("text_ids")
        let losses = r.meta["losses"]!.arrayValue!.map { Float($0.doubleValue!) }
        for step in 1...10 {
            let (loss, grads, textGrads) = try r.transformer.maskedTokenLoss(
                try r.batch(step: step), lora: lora, textEncoder: r.textEncoder, textIds: ids, textLoRA: textLoRA)
            #expect(abs(loss - losses[step - 1]) <= 1e-5 * losses[step - 1], "\(name) step \(step): \(loss)")
            optimizer.update(&lora, with: grads)
            textOptimizer.update(&textLoRA, with: textGrads)
            if step == 1 || step == 10 {
                #expect(adapterError(lora, try r.adapters("step\(step)")) <= 1e-5, "\(name) transformer, step \(step)")
                let textError = adapterError(textLoRA, try r.textAdapters("step\(step)"))
                #expect(textError <= 1e-5, "\(name) text encoder after \(step) steps: \(textError)")
                #expect(adapterError(textLoRA, try r.textAdapters("init")) > 1e-4)
            }
        }
    }

    /// The 10-step gate fails when the optimizer differs from torch's: with β₂ = 0.99 instead of 0.999 (what a
    /// slip in the second moment would do), the adapters after ten steps are far outside 1e-5.
    @Test func adamWGateFailsOnAWrongOptimizer() throws {
        let r = try StepRecord("tiny-256")
        var lora = try r.adapters("init")
        var settings = r.settings
        settings.beta2 = 0.99
        var optimizer = AdamW(settings, for: lora)
        for step in 1...10 {
            let (_, grads) = try r.transformer.maskedTokenLoss(try r.batch(step: step), lora: lora)
            optimizer.update(&lora, with: try #require(grads))
        }
        let error = adapterError(lora, try r.adapters("step10"))
        print("β₂ = 0.99: \(error) from torch after ten steps")
        #expect(error > 1e-5)
    }
}
