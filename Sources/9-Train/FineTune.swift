// Learning a style from one image: train_amused.py --use_lora --instance_data_image, in Swift.
//
// What is the same as the script: LoRA (r, alpha) on every to_q/to_k/to_v of the transformer (and on CLIP's
// q_proj/k_proj/v_proj with `trainTextEncoder`), image tokens from the frozen VQ encoder (pixels in [0, 1], as its
// ToTensor gives), the prompt through CLIP (hidden_states[-2], text_embeds), micro-conditioning [original width, original height, crop top, crop left, 6], t ~ U(0, 1), the
// cosine mask count, cross-entropy on the masked positions, AdamW with its defaults and a constant learning rate.
// What differs, and why:
// - Resizing uses Pillow's Lanczos (AmusedImage) where the script uses torchvision's bilinear: the one resampler here.
// - Augmentation: the script re-draws a random crop of the one image per step (no crop at all for a square image,
//   the usual case). Here the crops are a fixed set of five along the longer side (one for a square image), each
//   also mirrored left-right unless `flip` is off, encoded once; every batch item picks one at random. Mirroring
//   doubles what a single image teaches about a style without teaching a new shape.
// - `--cond_dropout_prob` in the script keeps the text where its mask is *true* — `torch.where((states * mask).bool(),
//   states, empty)` — so it drops the text with probability 1 − p, not p. Here p is the probability of training on
//   the empty prompt, as the option's name says. The default, 0, is the script's default, where both agree.

import AmusedBind
import AmusedImage
import AmusedModel

/// The settings of a fine-tune; the defaults follow train_amused.py where it has one.
public struct FineTuneOptions: Sendable, Equatable, Codable {
    /// Optimizer steps.
    public var steps = 300
    /// LoRA rank (`--lora_r`, 16).
    public var rank = 16
    /// LoRA alpha (`--lora_alpha`, 32): the update is scaled by alpha / rank.
    public var alpha: Float = 32
    /// AdamW (train_amused.py's defaults).
    public var optimizer = AdamWSettings()
    /// Images per step (the script's default is 16; smaller suits a CPU).
    public var batch = 4
    /// Seeds the adapters' initialisation and every draw of the run.
    public var seed: UInt64 = 0
    /// The lowest mask ratio (`--min_masking_rate`, 0).
    public var minMaskingRate: Float = 0
    /// Probability of training an item on the empty prompt (see the note above on the script's inversion).
    public var condDropout: Float = 0
    /// Clip the global gradient norm to this (`--max_grad_norm`, off).
    public var maxGradNorm: Float?
    /// Mirror the image left-right as augmentation.
    public var flip = true
    /// Train LoRA adapters on the text encoder's q_proj/k_proj/v_proj too (train_amused.py --train_text_encoder
    /// --text_encoder_use_lora --text_encoder_lora_target_modules q_proj k_proj v_proj), same rank and alpha.
    public var trainTextEncoder = false
    /// Share of each batch drawn from the preservation samples, when there are any (DreamBooth's prior
    /// preservation, with the model's own images as the prior).
    public var preservationShare: Float = 0.5

    /// train_amused.py's defaults, with a batch of 4.
    public init() {}

    /// Throws naming the first option out of range.
    public func validate() throws(TrainError) {
        func check(_ ok: Bool, _ message: String) throws(TrainError) { if !ok { throw TrainError(message) } }
        try check(steps > 0, "--steps must be at least 1, not \(steps)")
        try check(rank > 0 && rank <= 1024, "--rank must be in 1…1024, not \(rank)")
        try check(alpha.isFinite && alpha > 0, "--alpha must be a positive number, not \(alpha)")
        try check(batch > 0 && batch <= 256, "--batch must be in 1…256, not \(batch)")
        let o = optimizer
        try check(
            o.learningRate.isFinite && o.learningRate > 0 && o.learningRate < 1,
            "--lr must be in (0, 1), not \(o.learningRate)")
        try check(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "AdamW betas must be in [0, 1)")
        try check(
            o.epsilon > 0 && o.weightDecay >= 0 && o.weightDecay * o.learningRate < 1,
            "AdamW needs eps > 0 and 0 ≤ weight decay · lr < 1")
        try check(minMaskingRate >= 0 && minMaskingRate <= 1, "--min-masking-rate must be in [0, 1]")
        try check(condDropout >= 0 && condDropout <= 1, "--cond-dropout must be in [0, 1]")
        if let m = maxGradNorm { try check(m.isFinite && m > 0, "--max-grad-norm must be positive") }
        try check(preservationShare >= 0 && preservationShare < 1, "--preservation-share must be in [0, 1)")
    }
}

/// What a fine-tune trains on, prepared once: the image's augmented token grids and the encoded prompts.
public struct FineTuneData: Sendable {
    /// One augmentation of the image: its token grid [h·w] and micro-conditioning [5].
    public struct Variant: Sendable {
        /// VQ tokens, row-major.
        public let tokens: [Int64]
        /// [original width, original height, crop top, crop left, 6].
        public let microConds: [Float]
        /// How it was made (`crop 0,32 mirrored`).
        public let label: String
    }

    /// The augmentations.
    public let variants: [Variant]
    /// Token grid height.
    public let height: Int
    /// Token grid width.
    public let width: Int
    /// The prompt's hidden_states[-2] [1, L, D] and text_embeds [1, P].
    public let prompt: TextEncoderOutput
    /// The empty prompt's, for conditioning dropout.
    public let empty: TextEncoderOutput
    /// The prompt's token ids [L] (encoded again at every step when the text encoder is trained).
    public let promptIds: [Int64]
    /// The empty prompt's token ids.
    public let emptyIds: [Int64]
    /// The mask id (vocab_size − 1).
    public let maskId: Int64
    /// Preservation samples: the model's own images for other prompts, trained on alongside the style image so that
    /// prompts without the style word keep drawing what they drew (see `addPreservation`).
    public private(set) var preservation: [Sample] = []

    /// One preservation sample: a prompt and the tokens the unchanged model drew for it.
    public struct Sample: Sendable {
        /// The prompt.
        public let prompt: String
        /// Its encoding.
        public let text: TextEncoderOutput
        /// Its token ids.
        public let ids: [Int64]
        /// The token grid the base model generated [h·w].
        public let tokens: [Int64]
        /// The micro-conditioning it was generated with.
        public let microConds: [Float]
    }

    /// Resizes `image` so its shorter side is `resolution` (the model's: sample_size × the VQ scale), takes the
    /// crops and mirrors, encodes them with the VQ encoder and `prompt` with the text encoder.
    public init(components c: AmusedComponents, image: Image8, prompt: String, flip: Bool) throws {
        guard let transformer = c.transformer, let vq = c.vqvae, let text = c.textEncoder, let tokenizer = c.tokenizer
        else {
            throw TrainError("\(c.source): fine-tuning needs the transformer, VQ model, text encoder and tokenizer")
        }
        guard image.channels == 3 else { throw TrainError("the image must be RGB (it has \(image.channels) channels)") }
        let f = vq.config.scaleFactor, side = transformer.config.sampleSize * f
        guard image.width >= 8, image.height >= 8 else {
            throw TrainError("the image is \(image.width)×\(image.height); it needs at least 8 pixels a side")
        }
        // Resizing keeps the aspect ratio: a long strip would become a huge image. Crop it first.
        guard max(image.width, image.height) <= 4 * min(image.width, image.height) else {
            throw TrainError("the image is \(image.width)×\(image.height); crop it to an aspect ratio of at most 4:1")
        }
        // Resize(size): the shorter side to `side`, the longer in proportion (torchvision rounds down).
        let (rw, rh) =
            image.width <= image.height
            ? (side, max(side, image.height * side / image.width))
            : (max(side, image.width * side / image.height), side)
        let resized = image.resized(width: rw, height: rh)
        let span = max(rw, rh) - side
        let offsets = span == 0 ? [0] : [0, span / 4, span / 2, 3 * span / 4, span]
        var pixels: [Float] = [], made: [(micro: [Float], label: String)] = []
        for offset in offsets {
            let (top, left) = rw > rh ? (0, offset) : (offset, 0)
            for mirrored in flip ? [false, true] : [false] {
                var chw = [Float](repeating: 0, count: 3 * side * side)
                for y in 0..<side {
                    for x in 0..<side {
                        let sx = mirrored ? side - 1 - x : x
                        let src = ((top + y) * rw + left + sx) * 3
                        for ch in 0..<3 { chw[(ch * side + y) * side + x] = Float(resized.pixels[src + ch]) / 255 }
                    }
                }
                pixels += chw
                made.append(
                    (
                        [Float(image.width), Float(image.height), Float(top), Float(left), 6],
                        "crop \(top),\(left)" + (mirrored ? " mirrored" : "")
                    ))
            }
        }
        let tokens = try vq.encode(pixels, batch: made.count, height: side, width: side)
        let grid = (side / f) * (side / f)
        variants = made.enumerated().map { i, m in
            Variant(tokens: Array(tokens[(i * grid)..<((i + 1) * grid)]), microConds: m.micro, label: m.label)
        }
        height = side / f
        width = side / f
        promptIds = tokenizer.encode(prompt)
        emptyIds = tokenizer.encode("")
        self.prompt = try text(promptIds, batch: 1)
        empty = try text(emptyIds, batch: 1)
        maskId = Int64(transformer.config.vocabSize - 1)
    }

    /// Generates one image per prompt with the unchanged model (`seed`, the model's recommended steps and guidance
    /// unless given) and keeps its tokens as preservation samples. This is DreamBooth's prior preservation
    /// (diffusers' train_dreambooth_lora.py --with_prior_preservation), not part of train_amused.py: one image
    /// teaches the LoRA one prompt, and without samples of everything else it drifts for every prompt, the empty
    /// one included — which classifier-free guidance then amplifies. Include "" and the style prompt without its
    /// style word.
    public mutating func addPreservation(
        components c: AmusedComponents, prompts: [String], seed: UInt64,
        steps: Int? = nil, guidance: Float? = nil
    ) throws {
        guard !prompts.isEmpty else { return }
        let pipeline = try AmusedPipeline(components: c)
        guard let text = c.textEncoder, let tokenizer = c.tokenizer else { throw TrainError("no text encoder") }
        let f = pipeline.vqvae.config.scaleFactor, grid = height * width
        // In groups of 8 prompts (one generator seeded `seed + group` each), so memory stays that of a batch of 8.
        for start in stride(from: 0, to: prompts.count, by: 8) {
            let group = Array(prompts[start..<min(prompts.count, start + 8)])
            var request = GenerationRequest(prompts: group, height: height * f, width: width * f)
            request.seed = seed &+ UInt64(start / 8)
            request.steps = steps ?? c.samplingDefaults?.steps ?? request.steps
            request.guidanceScale = guidance ?? c.samplingDefaults?.guidance ?? request.guidanceScale
            let result = try pipeline.generate(request)
            guard let tokens = result.tokens.last, tokens.count == group.count * grid else {
                throw TrainError("the preservation generation produced nothing")
            }
            let micro: [Float] = [Float(width * f), Float(height * f), 0, 0, request.aestheticScore]
            for (i, prompt) in group.enumerated() {
                let ids = tokenizer.encode(prompt)
                preservation.append(
                    Sample(
                        prompt: prompt, text: try text(ids, batch: 1), ids: ids,
                        tokens: Array(tokens[(i * grid)..<((i + 1) * grid)]), microConds: micro))
            }
        }
    }
}

/// Where a fine-tune is: the adapters, the optimizer, the generator and the step — all a checkpoint holds.
public struct FineTuneState: Sendable {
    /// The adapters.
    public var adapters: LoRAAdapters
    /// AdamW's moments and step.
    public var optimizer: AdamW
    /// The text encoder's adapters and their moments, when it is trained.
    public var text: (adapters: LoRAAdapters, optimizer: AdamW)?
    /// The generator every draw of a step comes from.
    public var generator: TorchGenerator
    /// Steps done.
    public var step: Int

    /// The state before the first step: adapters as PEFT initialises them (A from a generator seeded with `seed`,
    /// B = 0), zero moments, the step generator seeded with `seed + 1`.
    /// With `textConfig` (the text encoder trained), its adapters are drawn next from the same generator.
    public init(config: UVit2DConfig, textConfig: CLIPTextConfig? = nil, options: FineTuneOptions) throws {
        var initial = TorchGenerator(seed: options.seed)
        adapters = try LoRAAdapters(
            config: config, rank: options.rank, alpha: options.alpha,
            uniform: { initial.nextUniform() })
        optimizer = AdamW(options.optimizer, for: adapters)
        if options.trainTextEncoder {
            guard let textConfig else { throw TrainError("training the text encoder needs its config") }
            let t = try LoRAAdapters(
                textConfig: textConfig, rank: options.rank, alpha: options.alpha,
                uniform: { initial.nextUniform() })
            text = (t, AdamW(options.optimizer, for: t))
        }
        generator = TorchGenerator(seed: options.seed &+ 1)
        step = 0
    }

    /// A state restored from a checkpoint's parts.
    public init(
        adapters: LoRAAdapters, optimizer: AdamW, text: (adapters: LoRAAdapters, optimizer: AdamW)? = nil,
        generator: TorchGenerator, step: Int
    ) {
        self.adapters = adapters
        self.optimizer = optimizer
        self.text = text
        self.generator = generator
        self.step = step
    }
}

/// One step's report.
public struct FineTuneStep: Sendable {
    /// The step just done (1-based).
    public let step: Int
    /// Its loss (before the update).
    public let loss: Float
    /// The gradient norm before any clipping.
    public let gradientNorm: Float
}

/// Runs fine-tuning steps on a transformer.
public struct FineTuner: Sendable {
    /// The frozen transformer.
    public let transformer: UVit2DModel
    /// The frozen text encoder (needed when it gets adapters).
    public let textEncoder: CLIPTextModel?
    /// The prepared image and prompt.
    public let data: FineTuneData
    /// The settings.
    public let options: FineTuneOptions

    /// A tuner for `transformer` on `data`; the options are validated.
    public init(
        transformer: UVit2DModel, textEncoder: CLIPTextModel? = nil, data: FineTuneData,
        options: FineTuneOptions
    ) throws(TrainError) {
        try options.validate()
        if options.trainTextEncoder && textEncoder == nil { throw TrainError("training the text encoder needs it") }
        if !data.preservation.isEmpty && Int(Float(options.batch) * options.preservationShare) == 0 {
            throw TrainError(
                "with --batch \(options.batch) and --preservation-share \(options.preservationShare) no batch "
                    + "item comes from the preservation samples; raise one of them")
        }
        self.transformer = transformer
        self.textEncoder = textEncoder
        self.data = data
        self.options = options
    }

    /// The batch of the next step, drawn from `generator`: per item, which example (the last
    /// ⌊share · batch⌋ items from the preservation samples when there are any, the rest from the image's views), then
    /// train_amused.py's masking, then (only when conditioning dropout is on) one uniform per item.
    public func nextBatch(_ generator: inout TorchGenerator) -> (batch: MaskedTokenBatch, textIds: [Int64]) {
        let n = options.batch, v = data.variants, kept = data.preservation
        let preserved = kept.isEmpty ? 0 : Int(Float(n) * options.preservationShare)
        let picks = generator.uniform(count: n).enumerated().map { i, u in
            i < n - preserved
                ? min(v.count - 1, Int(u * Float(v.count))) : v.count + min(kept.count - 1, Int(u * Float(kept.count)))
        }
        func item(_ k: Int) -> (tokens: [Int64], text: TextEncoderOutput, ids: [Int64], micro: [Float]) {
            k < v.count
                ? (v[k].tokens, data.prompt, data.promptIds, v[k].microConds)
                : (
                    kept[k - v.count].tokens, kept[k - v.count].text, kept[k - v.count].ids,
                    kept[k - v.count].microConds
                )
        }
        let items = picks.map(item)
        let (ids, labels) = Masking.mask(
            items.flatMap(\.tokens), batch: n, maskId: data.maskId,
            minMaskingRate: options.minMaskingRate, generator: &generator)
        let dropped =
            options.condDropout > 0
            ? generator.uniform(count: n).map { $0 < options.condDropout }
            : [Bool](repeating: false, count: n)
        let texts = zip(items, dropped).map { $1 ? data.empty : $0.text }
        let batch = MaskedTokenBatch(
            batch: n, height: data.height, width: data.width, inputIds: ids, labels: labels,
            encoderHiddenStates: texts.flatMap(\.penultimateHiddenStates), pooledTextEmb: texts.flatMap(\.textEmbeds),
            microConds: items.flatMap(\.micro))
        return (batch, zip(items, dropped).flatMap { $1 ? data.emptyIds : $0.ids })
    }

    /// One step on `state`: batch, loss and gradients, optional clipping, AdamW.
    public func step(_ state: inout FineTuneState) throws -> FineTuneStep {
        let (batch, textIds) = nextBatch(&state.generator)
        let loss: Float
        var grads: [LoRAGradients]
        if let text = state.text, let textEncoder {
            let r = try transformer.maskedTokenLoss(
                batch, lora: state.adapters, textEncoder: textEncoder,
                textIds: textIds, textLoRA: text.adapters)
            (loss, grads) = (r.loss, [r.transformer, r.textEncoder])
        } else {
            let r = try transformer.maskedTokenLoss(batch, lora: state.adapters)
            (loss, grads) = (r.loss, [r.gradients!])
        }
        guard loss.isFinite else { throw TrainError("step \(state.step + 1): the loss is \(loss); lower --lr") }
        let norm = grads.map { $0.norm * $0.norm }.reduce(0, +).squareRoot()
        if let limit = options.maxGradNorm, norm > limit {
            // clip_grad_norm_ over every trained parameter: scale by max_norm / (total_norm + 1e-6).
            let k = limit / (norm + 1e-6)
            for s in grads.indices {
                for i in grads[s].a.indices {
                    for j in grads[s].a[i].indices { grads[s].a[i][j] *= k }
                    for j in grads[s].b[i].indices { grads[s].b[i][j] *= k }
                }
            }
        }
        state.optimizer.update(&state.adapters, with: grads[0])
        if var text = state.text {
            text.optimizer.update(&text.adapters, with: grads[1])
            state.text = text
        }
        state.step += 1
        return FineTuneStep(step: state.step, loss: loss, gradientNorm: norm)
    }

    /// Steps from `state` until `options.steps`, reporting each; `checkpoint` is called after every `every` steps
    /// and after the last.
    public func run(
        _ state: inout FineTuneState, checkpointEvery every: Int = 0,
        progress: (FineTuneStep) -> Void = { _ in },
        checkpoint: (FineTuneState) throws -> Void = { _ in }
    ) throws {
        while state.step < options.steps {
            let report = try step(&state)
            progress(report)
            if (every > 0 && state.step % every == 0) || state.step == options.steps { try checkpoint(state) }
        }
    }
}
