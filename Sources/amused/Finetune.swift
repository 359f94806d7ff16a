// `amused finetune`: learn a style from one image as a LoRA (train_amused.py --use_lora, in Swift).

import AmusedBind
import AmusedImage
import AmusedModel
import AmusedPack
import AmusedRead
import AmusedTrain
import ArgumentParser
import Foundation

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Train a LoRA on one image (the transformer's to_q/to_k/to_v; with --text-encoder CLIP's "
            + "q_proj/k_proj/v_proj too), as train_amused.py --use_lora does.",
        discussion: """
            The output is a diffusers/PEFT LoRA file with its alpha recorded in the header (diffusers' \
            lora_adapter_metadata), so `amused generate --lora` and diffusers' loader (AmusedLoraLoaderMixin: \
            lora_state_dict, then load_lora_into_transformer) both apply alpha / rank. With --checkpoint-every N a resumable checkpoint (adapters, AdamW moments, generator) is \
            written atomically to --checkpoint every N steps; --resume continues from one. Ctrl-C leaves the last \
            complete checkpoint. The same --seed gives the same run.
            """)

    @Option(help: "The model: a diffusers pipeline folder (float32 or float16 weights; a bundle cannot be trained).")
    var model: String

    @Option(help: "The image whose style to learn (PNG or JPEG).")
    var image: String

    @Option(help: "Its caption, with the new word for the style (e.g. \"a circle in sks style\").")
    var prompt: String

    @Option(help: "Optimizer steps.")
    var steps = 300

    @Option(help: "LoRA rank (train_amused.py: 16).")
    var rank = 16

    @Option(help: "LoRA alpha; the update is scaled by alpha / rank (train_amused.py: 32).")
    var alpha: Float = 32

    @Option(help: "Learning rate (train_amused.py: 3e-4).")
    var lr: Double = 3e-4

    @Option(help: "AdamW weight decay (train_amused.py: 0.01).")
    var weightDecay: Double = 1e-2

    @Option(help: "Images per step (each a mirrored or cropped view of the image, masked at its own ratio).")
    var batch = 4

    @Option(help: "Seed of the adapters' initialisation and of every draw.")
    var seed: UInt64 = 0

    @Option(help: "Lowest masking ratio (train_amused.py --min_masking_rate).")
    var minMaskingRate: Float = 0

    @Option(help: "Probability of training a batch item on the empty prompt instead of --prompt.")
    var condDropout: Float = 0

    @Option(help: "Clip the gradient norm to this (off by default, as in train_amused.py).")
    var maxGradNorm: Float?

    @Flag(help: "Train LoRA adapters on the text encoder's q_proj/k_proj/v_proj as well (same rank and alpha).")
    var textEncoder = false

    @Flag(help: "Do not mirror the image left-right as augmentation.")
    var noFlip = false

    @Option(
        help: ArgumentHelp(
            "A text file of prompts (one per line, an empty line for the empty prompt): the model "
                + "draws one image for each before training, and those images are trained on beside "
                + "yours so that prompts without the style word keep their look (prior preservation).",
            valueName: "file"))
    var preserve: String?

    @Option(help: "Share of each batch taken from the --preserve samples.")
    var preservationShare: Float = 0.5

    @Option(help: "Write a resumable checkpoint every N steps (0: never).")
    var checkpointEvery = 0

    @Option(help: "The checkpoint file (default: --out with .checkpoint.safetensors).")
    var checkpoint: String?

    @Option(help: "Continue from this checkpoint (same model, image, prompt and options).")
    var resume: String?

    @Option(help: "Output LoRA file (.safetensors).")
    var out: String

    mutating func validate() throws {
        if checkpointEvery < 0 { throw ValidationError("--checkpoint-every must be 0 or more") }
        do { try options.validate() } catch { throw ValidationError(error.message) }
    }

    var options: FineTuneOptions {
        var o = FineTuneOptions()
        o.steps = steps
        o.rank = rank
        o.alpha = alpha
        o.optimizer.learningRate = lr
        o.optimizer.weightDecay = weightDecay
        o.batch = batch
        o.seed = seed
        o.minMaskingRate = minMaskingRate
        o.condDropout = condDropout
        o.maxGradNorm = maxGradNorm
        o.flip = !noFlip
        o.preservationShare = preservationShare
        o.trainTextEncoder = textEncoder
        return o
    }

    var checkpointPath: String {
        checkpoint ?? (out.hasSuffix(".safetensors") ? String(out.dropLast(".safetensors".count)) : out)
            + ".checkpoint.safetensors"
    }

    func run() throws { try reportingErrors(finetune) }

    func finetune() throws {
        let start = Date()
        guard !ModelSource.isBundle(model) else {
            throw TrainError(
                "\(model) is a bundle; fine-tune the checkpoint it was made from (bundles hold weights "
                    + "for inference, possibly quantized)")
        }
        let components = try AmusedComponents(path: model)
        guard let transformer = components.transformer else { throw TrainError("\(model) has no transformer") }
        guard let bytes = FileManager.default.contents(atPath: image), bytes.count <= 256 << 20 else {
            throw ImageError(path: image, "cannot read the file (or it is larger than 256 MiB)")
        }
        let picture = try decodeImage([UInt8](bytes), path: image)
        var preservationPrompts: [String] = []
        if let preserve {
            guard
                let text = FileManager.default.contents(atPath: preserve).flatMap({ String(data: $0, encoding: .utf8) })
            else { throw TrainError("\(preserve): cannot read the preservation prompts") }
            preservationPrompts = text.components(separatedBy: "\n").map {
                $0.hasSuffix("\r") ? String($0.dropLast()) : $0
            }
            if preservationPrompts.last == "" { preservationPrompts.removeLast() }
            guard !preservationPrompts.isEmpty, preservationPrompts.count <= 1024 else {
                throw TrainError("\(preserve): give between 1 and 1024 prompts, one per line")
            }
        }
        let textConfig = components.textEncoder?.config
        guard let weights = components.checkpoint?.component("transformer")?.weights else {
            throw TrainError("\(model): the transformer's weights cannot be read")
        }
        let identity = LoRAFile.RunIdentity(
            options: options, prompt: prompt,
            imageSHA256: try BundleFormat.sha256(file: image).hex,
            preservationPrompts: preservationPrompts,
            model: try LoRAFile.fingerprint(weights))
        // A checkpoint is checked before anything slow runs.
        let resumed = try resume.map {
            try LoRAFile.readCheckpoint(
                path: $0, config: transformer.config, textConfig: textConfig, identity: identity)
        }
        var data = try FineTuneData(components: components, image: picture, prompt: prompt, flip: !noFlip)
        if !preservationPrompts.isEmpty {
            FileHandle.standardError.write(
                Data("drawing \(preservationPrompts.count) preservation images with the unchanged model…\n".utf8))
            try data.addPreservation(components: components, prompts: preservationPrompts, seed: seed)
        }
        let tuner = try FineTuner(
            transformer: transformer, textEncoder: components.textEncoder, data: data,
            options: options)
        var state = try resumed ?? FineTuneState(config: transformer.config, textConfig: textConfig, options: options)
        let adapters = state.adapters
        let count = adapters.adapters.count + (state.text?.adapters.adapters.count ?? 0)
        let values = adapters.parameterCount + (state.text?.adapters.parameterCount ?? 0)
        var intro = "fine-tuning \(count) LoRA adapters" + (state.text != nil ? " (transformer and text encoder)" : "")
        intro += " (rank \(rank), alpha \(alpha), \(values) values) on \(data.variants.count) view(s) of \(image), "
        intro += "\(data.height)×\(data.width) tokens, batch \(batch)"
        if state.step > 0 { intro += ", resuming at step \(state.step)" }
        FileHandle.standardError.write(Data((intro + "\n").utf8))
        let bar = ProgressBar(unit: "step", every: 10)
        var recent: [Float] = []
        let runStart = Date()
        let first = state.step
        try tuner.run(
            &state, checkpointEvery: checkpointEvery,
            progress: { report in
                recent = Array((recent + [report.loss]).suffix(20))
                let mean = recent.reduce(0, +) / Float(recent.count)
                let perStep = Date().timeIntervalSince(runStart) / Double(report.step - first)
                bar.update(
                    report.step, steps,
                    suffix: String(
                        format: " loss %.4f (mean of last %d: %.4f) %.2f s/step",
                        report.loss, recent.count, mean, perStep))
            },
            checkpoint: { s in
                if checkpointEvery > 0 { try LoRAFile.writeCheckpoint(s, identity: identity, to: checkpointPath) }
            })
        try LoRAFile.write(
            state.adapters, text: state.text?.adapters, to: out,
            note: "amused finetune: \(steps) steps on \(image) "
                + "with \"\(prompt)\", seed \(seed)")
        FileHandle.standardError.write(
            Data(
                String(
                    format: "trained %d steps in %.1f s → %@ (alpha %g / rank %d = scale %g recorded in the file)\n",
                    steps - first, Date().timeIntervalSince(start), out, alpha, rank, alpha / Float(rank)
                ).utf8))
    }
}
