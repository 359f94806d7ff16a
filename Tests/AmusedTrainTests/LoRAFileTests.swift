// The files a fine-tune writes: the LoRA (alpha recorded, read back by the fusion), checkpoints that resume a run
// exactly, and refusals that name the file.

import AmusedBind
import AmusedCore
import AmusedImage
import AmusedModel
import AmusedRead
import AmusedTestSupport
import AmusedTrain
import AmusedVerify
import Foundation
import Testing

/// A small run on tiny-256: a 24×16 image (three crops along the width, each mirrored), two steps per call.
struct TinyRun {
    let components: AmusedComponents
    let data: FineTuneData
    var options = FineTuneOptions()

    init() throws {
        components = try AmusedComponents(path: FixturePaths.path("records/tiny-256/model"))
        var pixels = [UInt8](repeating: 0, count: 24 * 16 * 3)
        for i in pixels.indices { pixels[i] = UInt8((i * 37) % 251) }
        data = try FineTuneData(
            components: components, image: Image8(width: 24, height: 16, channels: 3, pixels: pixels),
            prompt: "a photo in sks style", flip: true)
        options.rank = 4
        options.alpha = 8
        options.batch = 2
        options.steps = 4
        options.optimizer.learningRate = 1e-2
    }

    var tuner: FineTuner {
        get throws { try FineTuner(transformer: components.transformer!, data: data, options: options) }
    }
}

@Suite("fine-tune files")
struct LoRAFileTests {
    /// The image is resized so its shorter side is the model's resolution, cropped at five offsets along the longer
    /// side and mirrored, and the crops' micro-conditioning names the original size and the crop. tiny-256 draws
    /// 32×32 (sample_size 8 × VQ scale 4): 24×16 becomes 48×32, the crops start at x = 0, 4, 8, 12, 16.
    @Test func viewsOfTheImage() throws {
        let run = try TinyRun()
        #expect(run.data.variants.count == 10)
        #expect(run.data.variants.map { $0.microConds[3] } == [0, 0, 4, 4, 8, 8, 12, 12, 16, 16])
        #expect(run.data.variants.allSatisfy { Array($0.microConds[0..<3]) == [24, 16, 0] && $0.microConds[4] == 6 })
        #expect(run.data.variants[0].tokens.count == run.data.height * run.data.width)
    }

    /// The LoRA file holds PEFT's keys and the LoraConfig diffusers reads back; LoRA(path:) takes alpha from it, so
    /// fusing at scale 1 adds (alpha / r) · B·A — the scale training used, not diffusers' no-alpha default of 1.
    @Test func loraFileRecordsAlpha() throws {
        let run = try TinyRun()
        var state = try FineTuneState(config: run.components.transformer!.config, options: run.options)
        try run.tuner.run(&state)
        let dir = try ScratchFolder()
        let path = dir.path + "/style.safetensors"
        try LoRAFile.write(state.adapters, to: path)
        let file = try SafetensorsFile(path: path)
        let metadata = try #require(file.metadataValue("lora_adapter_metadata"))
        #expect(metadata.contains("\"transformer.lora_alpha\": 8") && metadata.contains("\"transformer.r\": 4"))
        let first = state.adapters.adapters[0]
        #expect(
            file.infos.contains {
                $0.name == "transformer.\(first.module).lora_A.weight" && $0.shape == [4, first.inFeatures]
            })
        let lora = try LoRA(path: path)
        let pair = try #require(lora.pair(first.module + ".weight", component: "transformer"))
        #expect(pair.alpha == 8 && pair.rank == 4)
        // W' = W + 1 · (8 / 4) · B·A for the first adapter, checked element by element.
        let weights = try #require(run.components.checkpoint?.component("transformer")?.weights)
        let w = try weights.tensor(named: first.module + ".weight")
        let fused = try lora.fused(w, pair, component: "transformer", scale: 1).floats()
        let base = try w.floats()
        let r = 4, inner = first.inFeatures
        for o in [0, first.outFeatures - 1] {
            for i in [0, inner - 1] {
                var ba: Float = 0
                for k in 0..<r { ba += first.b[o * r + k] * first.a[k * inner + i] }
                let expected = base[o * inner + i] + 2 * ba
                #expect(abs(fused[o * inner + i] - expected) <= 1e-6)
            }
        }
    }

    /// A run checkpointed after 2 steps and resumed from the file ends bit for bit where an uninterrupted run ends:
    /// adapters, moments and generator all come back.
    @Test func resumeContinuesExactly() throws {
        let run = try TinyRun()
        let config = run.components.transformer!.config
        let identity = LoRAFile.RunIdentity(options: run.options, prompt: "a photo in sks style", imageSHA256: "00")
        var straight = try FineTuneState(config: config, options: run.options)
        try run.tuner.run(&straight)
        let dir = try ScratchFolder()
        let path = dir.path + "/run.checkpoint.safetensors"
        var first = try FineTuneState(config: config, options: run.options)
        var stopped = run
        stopped.options.steps = 2
        try stopped.tuner.run(&first)
        try LoRAFile.writeCheckpoint(first, identity: identity, to: path)
        var resumed = try LoRAFile.readCheckpoint(path: path, config: config, identity: identity)
        #expect(resumed.step == 2)
        try run.tuner.run(&resumed)
        #expect(resumed.step == 4)
        #expect(resumed.adapters == straight.adapters)
        #expect(resumed.optimizer == straight.optimizer)
        #expect(resumed.generator.snapshot == straight.generator.snapshot)
    }

    /// With the text encoder trained, the LoRA file carries both sets (the text encoder's under `text_encoder.`, its
    /// alpha recorded too) and a checkpoint resumes both exactly.
    @Test func textEncoderAdaptersAreWrittenAndResumed() throws {
        var run = try TinyRun()
        run.options.trainTextEncoder = true
        let config = run.components.transformer!.config, textConfig = run.components.textEncoder!.config
        let tuner = try FineTuner(
            transformer: run.components.transformer!, textEncoder: run.components.textEncoder,
            data: run.data, options: run.options)
        var straight = try FineTuneState(config: config, textConfig: textConfig, options: run.options)
        try tuner.run(&straight)
        let text = try #require(straight.text)
        #expect(text.optimizer.step == 4)
        let dir = try ScratchFolder()
        let file = dir.path + "/style.safetensors"
        try LoRAFile.write(straight.adapters, text: text.adapters, to: file)
        let lora = try LoRA(path: file)
        let pair = try #require(lora.pair(text.adapters.adapters[0].module + ".weight", component: "text_encoder"))
        #expect(pair.alpha == 8 && pair.down.shape == [4, textConfig.hiddenSize])
        #expect(lora.pairs["text_encoder"]?.count == text.adapters.adapters.count)
        _ = try AmusedComponents(path: FixturePaths.path("records/tiny-256/model"), lora: LoRAFusion(lora, scale: 1))

        var stopped = run
        stopped.options.steps = 2
        let first = try FineTuner(
            transformer: run.components.transformer!, textEncoder: run.components.textEncoder,
            data: run.data, options: stopped.options)
        var state = try FineTuneState(config: config, textConfig: textConfig, options: run.options)
        try first.run(&state)
        let identity = LoRAFile.RunIdentity(options: run.options, prompt: "p", imageSHA256: "00")
        let checkpoint = dir.path + "/run.checkpoint.safetensors"
        try LoRAFile.writeCheckpoint(state, identity: identity, to: checkpoint)
        var resumed = try LoRAFile.readCheckpoint(
            path: checkpoint, config: config, textConfig: textConfig,
            identity: identity)
        try tuner.run(&resumed)
        #expect(resumed.adapters == straight.adapters)
        #expect(resumed.text?.adapters == text.adapters)
        #expect(resumed.text?.optimizer == text.optimizer)
    }

    /// Resuming with another prompt, or from a file that is not a checkpoint, is refused with the file named.
    @Test func wrongResumesAreRefused() throws {
        let run = try TinyRun()
        let config = run.components.transformer!.config
        let identity = LoRAFile.RunIdentity(options: run.options, prompt: "a photo in sks style", imageSHA256: "00")
        let dir = try ScratchFolder()
        let path = dir.path + "/run.checkpoint.safetensors"
        try LoRAFile.writeCheckpoint(
            try FineTuneState(config: config, options: run.options), identity: identity, to: path)
        var other = identity
        other.prompt = "something else"
        #expect { try LoRAFile.readCheckpoint(path: path, config: config, identity: other) } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("different prompt")
        }
        var otherOptions = identity
        otherOptions.options.rank = 8
        #expect { try LoRAFile.readCheckpoint(path: path, config: config, identity: otherOptions) } throws: { error in
            "\(error)".contains("different options")
        }
        let lora = dir.path + "/plain.safetensors"
        try LoRAFile.write(try FineTuneState(config: config, options: run.options).adapters, to: lora)
        #expect { try LoRAFile.readCheckpoint(path: lora, config: config, identity: identity) } throws: { error in
            "\(error)".contains(lora) && "\(error)".contains("not an AmusedKit fine-tune checkpoint")
        }
    }

    /// Hostile checkpoints and LoRA headers are refused with the file and tensor named, before anything is trusted: a
    /// transposed A (same element count), a negative second moment, an optimizer step that disagrees with the run's,
    /// and a LoRA header asking for rank-stabilised scaling. An image more than 4:1 is refused before resizing.
    @Test func hostileFilesAreRefused() throws {
        let run = try TinyRun()
        let config = run.components.transformer!.config
        let identity = LoRAFile.RunIdentity(options: run.options, prompt: "p", imageSHA256: "00")
        let dir = try ScratchFolder()
        let good = dir.path + "/good.safetensors"
        try LoRAFile.writeCheckpoint(
            try FineTuneState(config: config, options: run.options), identity: identity, to: good)
        let file = try SafetensorsFile(path: good)
        let first = try #require(
            file.infos.first { $0.name.hasSuffix(".lora_A.weight") && $0.name.hasPrefix("transformer.") })
        let moment = try #require(file.infos.first { $0.name.hasPrefix("optimizer.exp_avg_sq.") })
        func variant(
            _ name: String, metadata: [(String, String)]? = nil,
            _ change: (String, Tensor) throws -> Tensor
        ) throws -> String {
            let tensors = try file.infos.map { ($0.name, try change($0.name, try file.tensor(named: $0.name))) }
            let path = dir.path + "/" + name
            try SafetensorsWriter.write(
                tensors, metadata: metadata ?? file.metadata.map { ($0.key, $0.value) }, to: path)
            return path
        }
        let transposed = try variant("transposed.safetensors") { name, t in
            name == first.name ? try t.reshaped(t.shape.reversed()) : t
        }
        #expect { try LoRAFile.readCheckpoint(path: transposed, config: config, identity: identity) } throws: { error in
            "\(error)".contains(transposed) && "\(error)".contains(first.name)
        }
        let negative = try variant("negative.safetensors") { name, t in
            name == moment.name ? try Tensor(floats: try t.floats().map { _ in -1 }, shape: t.shape) : t
        }
        #expect { try LoRAFile.readCheckpoint(path: negative, config: config, identity: identity) } throws: { error in
            "\(error)".contains(moment.name) && "\(error)".contains("negative")
        }
        let runText = try #require(file.metadataValue(LoRAFile.checkpointKey))
        let skewed = try variant(
            "skewed.safetensors",
            metadata: [
                ("format", "pt"),
                (
                    LoRAFile.checkpointKey,
                    runText.replacingOccurrences(
                        of: "\"optimizerStep\":0", with: "\"optimizerStep\":9223372036854775807")
                ),
            ]
        ) { $1 }
        #expect { try LoRAFile.readCheckpoint(path: skewed, config: config, identity: identity) } throws: { error in
            "\(error)".contains("not an AmusedKit fine-tune checkpoint")
        }
        let lora = dir.path + "/lora.safetensors"
        try LoRAFile.write(try FineTuneState(config: config, options: run.options).adapters, to: lora)
        let loraFile = try SafetensorsFile(path: lora)
        let rslora = dir.path + "/rslora.safetensors"
        try SafetensorsWriter.write(
            try loraFile.infos.map { ($0.name, try loraFile.tensor(named: $0.name)) },
            metadata: [
                (
                    "lora_adapter_metadata",
                    #"{"transformer.r": 4, "transformer.lora_alpha": 8, "transformer.use_rslora": true}"#
                )
            ],
            to: rslora)
        #expect { try LoRA(path: rslora) } throws: { "\($0)".contains("use_rslora") && "\($0)".contains(rslora) }
        let strip = Image8(width: 200, height: 40, channels: 3, pixels: [UInt8](repeating: 9, count: 200 * 40 * 3))
        #expect { try FineTuneData(components: run.components, image: strip, prompt: "p", flip: true) } throws: {
            "\($0)".contains("4:1")
        }
    }

    /// Options out of range are refused naming the option.
    @Test func badOptionsAreNamed() throws {
        var o = FineTuneOptions()
        o.rank = 0
        #expect(throws: TrainError("--rank must be in 1…1024, not 0")) { try o.validate() }
        o = FineTuneOptions()
        o.optimizer.learningRate = .nan
        #expect { try o.validate() } throws: { "\($0)".contains("--lr") }
        o = FineTuneOptions()
        o.condDropout = 2
        #expect { try o.validate() } throws: { "\($0)".contains("--cond-dropout") }
    }

    /// A LoRA `amused finetune` wrote (Fixtures/finetune/striped-sks.safetensors), loaded by diffusers through the
    /// LoraConfig its header records (scaling 2.0), gives the transformer logits and the tokens of every sampling step
    /// that `amused generate --lora` gives at --lora-scale 1 (record made by Tools/record.py). At scale 0.5 the
    /// same record fails: the check sees the scale.
    @Test func finetunedLoRAMatchesDiffusers() throws {
        let record = try ReferenceRecord(path: FixturePaths.path("finetune/record"))
        let lora = try LoRA(path: FixturePaths.path("finetune/striped-sks.safetensors"))
        #expect(lora.hasAlpha)
        let profile = try ToleranceProfile.load("fp32")
        let report = try Verifier(record: record, profile: profile, lora: LoRAFusion(lora, scale: 1)).run()
        #expect(report.pass)
        for c in report.cases where c.kind == "text_to_image" {
            #expect(c.tokenAgreementPerStep?.allSatisfy { $0 == 1 } == true, "\(c.name)")
        }
        let wrong = try Verifier(record: record, profile: profile, lora: LoRAFusion(lora, scale: 0.5)).run()
        #expect(!wrong.pass)
    }
}
