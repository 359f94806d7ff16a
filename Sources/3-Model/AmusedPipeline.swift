// port of diffusers/pipelines/amused/pipeline_amused{,_img2img,_inpaint}.py, v0.35.2

import AmusedKernels
import Dispatch
import Foundation

/// What to generate. Which pipeline runs follows from the inputs: no init image → text-to-image; an init image →
/// image-to-image; an init image and a mask → inpainting.
public struct GenerationRequest: Sendable {
    /// One prompt per image (before `imagesPerPrompt` copies).
    public var prompts: [String]
    /// Negative prompts (one per prompt); nil means `""` for each when guidance is on.
    public var negativePrompts: [String]? = nil
    /// Seed of the generator (torch's `manual_seed` semantics when `reproducible`).
    public var seed: UInt64 = 0
    /// Sampling steps (12 by default in diffusers).
    public var steps = 12
    /// Classifier-free guidance scale; guidance is on when > 1.
    public var guidanceScale: Float = 10
    /// Temperature at the first and last step (linearly interpolated).
    public var temperature: (Float, Float) = (2, 0)
    /// Output height in pixels (text-to-image; image inputs set their own size).
    public var height: Int
    /// Output width in pixels.
    public var width: Int
    /// Micro-conditioning aesthetic score.
    public var aestheticScore: Float = 6
    /// Micro-conditioning crop coordinates (top, left).
    public var cropCoord: (Int, Int) = (0, 0)
    /// Images generated per prompt.
    public var imagesPerPrompt = 1
    /// Init images, uint8 [n, H, W, 3] (n = number of prompts), for image-to-image and inpainting.
    public var initImages: [UInt8]? = nil
    /// Fraction of the schedule to run on an init image (diffusers' default 0.5 for image-to-image, 1.0 for
    /// inpainting).
    public var strength: Double? = nil
    /// Inpainting mask at the token grid, uint8 [n, h, w]; ≥ 128 means regenerate.
    public var mask: [UInt8]? = nil
    /// Reproduce torch's CPU generator draw for draw (seed-for-seed parity); false uses a faster generator.
    public var reproducible = true

    /// A request for `prompts` at `height` × `width`.
    public init(prompts: [String], height: Int, width: Int) {
        self.prompts = prompts
        self.height = height
        self.width = width
    }
}

/// What a generation produced.
public struct GenerationResult: Sendable {
    /// Images, uint8 [batch, height, width, 3], rounded from the decoder's [0, 1] output like the pipelines' PIL
    /// output.
    public let images: [UInt8]
    /// The token grid after every step run, each [batch, h, w].
    public let tokens: [[Int64]]
    /// Number of images.
    public let batch: Int
    /// Image height.
    public let height: Int
    /// Image width.
    public let width: Int
    /// Seconds per sampling step (transformer and scheduler).
    public let stepSeconds: [Double]
    /// Seconds spent encoding text and images and decoding tokens.
    public let otherSeconds: Double
}

/// The three aMUSEd pipelines over the Swift graph.
public struct AmusedPipeline: Sendable {
    /// Prompt tokenizer.
    public let tokenizer: CLIPTokenizer
    /// Text encoder.
    public let textEncoder: CLIPTextModel
    /// Masked-token transformer.
    public let transformer: UVit2DModel
    /// VQ-GAN.
    public let vqvae: VQModel
    /// The mask token id.
    public let maskTokenId: Int
    /// The scheduler config's masking schedule for text-to-image and image-to-image (inpainting always runs linear).
    public let maskingSchedule: MaskingSchedule

    /// A pipeline over bound components.
    public init(
        tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, transformer: UVit2DModel, vqvae: VQModel,
        maskTokenId: Int, maskingSchedule: MaskingSchedule = .cosine
    ) {
        self.tokenizer = tokenizer
        self.textEncoder = textEncoder
        self.transformer = transformer
        self.vqvae = vqvae
        self.maskTokenId = maskTokenId
        self.maskingSchedule = maskingSchedule
    }

    /// Runs a request; `progress(stepsDone, stepsTotal)` is called after every step.
    public func generate(_ r: GenerationRequest, progress: ((Int, Int) -> Void)? = nil) throws -> GenerationResult {
        try generate(r, progress: progress, shadow: nil)
    }

    /// Runs `r` with the generator it asks for (torch-compatible or fast), seeded with its seed.
    func generate(_ r: GenerationRequest, progress: ((Int, Int) -> Void)?, shadow: Shadow?) throws -> GenerationResult {
        if r.reproducible {
            var rng = TorchGenerator(seed: r.seed)
            return try generate(r, randomness: &rng, progress: progress, shadow: shadow)
        }
        var rng = FastGenerator(seed: r.seed)
        return try generate(r, randomness: &rng, progress: progress, shadow: shadow)
    }

    /// Runs `r` with this pipeline and, at every step, `candidate` on the same tokens and random draws; returns this
    /// pipeline's result and how the candidate's predictions compared, step by step (teacher forcing: the candidate
    /// never drifts onto its own path, so each step measures the candidate alone).
    public func compare(_ r: GenerationRequest, candidate: AmusedPipeline) throws
        -> (reference: GenerationResult, steps: [StepComparison])
    {
        let collector = StepCollector()
        let shadow = Shadow(pipeline: candidate, observe: { collector.steps.append($0) })
        let result = try generate(r, progress: nil, shadow: shadow)
        return (result, collector.steps)
    }

    /// A pipeline run alongside, and where its per-step comparisons go.
    struct Shadow {
        let pipeline: AmusedPipeline
        let observe: (StepComparison) -> Void
    }

    final class StepCollector { var steps: [StepComparison] = [] }

    /// The transformer's conditioning for `r`: text encoded once (repeated per image by tiling [p0, p1, p0, p1];
    /// negatives first under guidance), micro-conditioning, the step-invariant projections.
    func conditioning(_ r: GenerationRequest, width: Int, height: Int) throws -> UVitConditioning {
        let prompts = r.prompts.count
        let guided = r.guidanceScale > 1
        func encode(_ texts: [String]) throws -> TextEncoderOutput {
            try textEncoder(texts.flatMap { tokenizer.encode($0) }, batch: texts.count)
        }
        func tiled(_ x: [Float]) -> [Float] { Array((0..<r.imagesPerPrompt).map { _ in x }.joined()) }
        let positive = try encode(r.prompts)
        var hidden = tiled(positive.penultimateHiddenStates), pooled = tiled(positive.textEmbeds)
        if guided {
            let negatives = r.negativePrompts ?? Array(repeating: "", count: prompts)
            guard negatives.count == prompts else {
                throw ModelError.invalidInput("\(negatives.count) negative prompts for \(prompts) prompts")
            }
            let negative = try encode(negatives)
            hidden = tiled(negative.penultimateHiddenStates) + hidden
            pooled = tiled(negative.textEmbeds) + pooled
        }
        let modelBatch = (guided ? 2 : 1) * prompts * r.imagesPerPrompt
        let micro: [Float] = (0..<modelBatch).flatMap { _ -> [Float] in
            [Float(width), Float(height), Float(r.cropCoord.0), Float(r.cropCoord.1), r.aestheticScore]
        }
        return try transformer.conditioning(
            encoderHiddenStates: hidden, pooledTextEmb: pooled, microConds: micro,
            batch: modelBatch)
    }

    /// The logits the scheduler samples from, [batch, positions, codebook]: one forward (both halves under guidance)
    /// and uncond + g·(cond − uncond) on the raw logits, float32, in that order.
    func guidedLogits(
        _ latents: [Int64], _ r: GenerationRequest, conditioning: UVitConditioning, batch: Int, h: Int,
        w: Int
    ) throws -> [Float] {
        let guided = r.guidanceScale > 1
        let input = guided ? latents + latents : latents
        let logits = try transformer.logitsByPosition(input, height: h, width: w, conditioning: conditioning)
        guard guided else { return logits }
        let half = batch * transformer.config.codebookSize * h * w
        var combined = [Float](repeating: 0, count: half)
        for k in 0..<half { combined[k] = logits[k] + r.guidanceScale * (logits[half + k] - logits[k]) }
        return combined
    }

    /// Largest batch (prompts × images per prompt), step count and image side a request may ask for.
    static let maxBatch = 256, maxSteps = 1000, maxSide = 4096

    func generate(
        _ r: GenerationRequest, randomness: inout some SamplerRandomness,
        progress: ((Int, Int) -> Void)?, shadow: Shadow? = nil
    ) throws -> GenerationResult {
        let started = DispatchTime.now().uptimeNanoseconds
        let prompts = r.prompts.count
        guard prompts > 0, r.imagesPerPrompt > 0, r.steps > 0 else {
            throw ModelError.invalidInput("need at least one prompt, one image per prompt and one step")
        }
        // Requests also come from files (reference records): every size is bounded before anything is multiplied
        // or allocated from it.
        guard prompts <= Self.maxBatch, r.imagesPerPrompt <= Self.maxBatch,
            prompts * r.imagesPerPrompt <= Self.maxBatch,
            r.steps <= Self.maxSteps, (1...Self.maxSide).contains(r.height), (1...Self.maxSide).contains(r.width)
        else {
            throw ModelError.invalidInput(
                "at most \(Self.maxBatch) images, \(Self.maxSteps) steps and "
                    + "\(Self.maxSide) pixels a side (got \(prompts)×\(r.imagesPerPrompt) images, \(r.steps) steps, "
                    + "\(r.height)×\(r.width))")
        }
        guard r.guidanceScale.isFinite, r.strength.map({ $0.isFinite && (0...1).contains($0) }) ?? true else {
            throw ModelError.invalidInput("guidance scale must be finite and strength within 0…1")
        }
        let batch = prompts * r.imagesPerPrompt
        let f = vqvae.config.scaleFactor
        let height = r.height, width = r.width
        if let images = r.initImages, images.count != prompts * height * width * 3 {
            // Image inputs come at the request's size; the caller resizes to multiples of the scale factor first.
            throw ModelError.invalidInput("init images must be [\(prompts), \(height), \(width), 3]")
        }
        guard height % f == 0, width % f == 0 else {
            throw ModelError.invalidInput("height and width must be multiples of \(f) (got \(height)×\(width))")
        }
        let h = height / f, w = width / f, positions = h * w

        let conditioning = try conditioning(r, width: width, height: height)
        // A shadow pipeline (comparisons) gets its own conditioning from its own text encoder, computed once.
        let shadowConditioning = try shadow.map { try $0.pipeline.conditioning(r, width: width, height: height) }

        var scheduler = AmusedScheduler(maskTokenId: maskTokenId, schedule: maskingSchedule)
        scheduler.setTimesteps(r.steps, temperature: r.temperature)
        var latents: [Int64]
        var start = 0
        var startingMaskRatio: Float = 1
        if let images = r.initImages {
            let pixels = images.map { Float($0) / 255 }
            let nchw = Self.nhwcToNCHW(pixels, batch: prompts, height: height, width: width)
            var tokens = try vqvae.encode(nchw, batch: prompts, height: height, width: width)
            let strength = r.strength ?? (r.mask == nil ? 0.5 : 1.0)
            let run = Int(Double(r.steps) * strength)
            start = r.steps - run
            if let mask = r.mask {
                // Inpainting: the pipeline switches the scheduler to the linear schedule and masks the tokens
                // under the mask (≥ 128 → regenerate); no add_noise.
                scheduler.schedule = .linear
                guard mask.count == prompts * positions else {
                    throw ModelError.invalidInput("mask must be [\(prompts), \(h), \(w)] at the token grid")
                }
                var masked = 0
                for i in tokens.indices where mask[i] >= 128 {
                    tokens[i] = Int64(maskTokenId)
                    masked += 1
                }
                startingMaskRatio = Float(masked) / Float(tokens.count)
            } else {
                // start − 1 is −1 when the whole schedule runs: Python's timesteps[-1] is the last timestep, 0,
                // whose mask ratio cos(π/2) masks (almost) nothing (docs/model-notes.md §5.4).
                let t = scheduler.timesteps[start >= 1 ? start - 1 : scheduler.timesteps.count - 1]
                tokens = scheduler.addNoise(tokens, timestep: t, randomness: &randomness)
            }
            latents = Array((0..<r.imagesPerPrompt).map { _ in tokens }.joined())
        } else {
            latents = [Int64](repeating: Int64(maskTokenId), count: batch * positions)
        }
        let prepared = DispatchTime.now().uptimeNanoseconds

        var history: [[Int64]] = []
        var stepSeconds: [Double] = []
        let codebook = transformer.config.codebookSize
        for i in start..<r.steps {
            let stepStart = DispatchTime.now().uptimeNanoseconds
            let logits = try guidedLogits(latents, r, conditioning: conditioning, batch: batch, h: h, w: w)
            if let shadow, let shadowConditioning {
                // The shadow predicts from the same tokens; its step uses the same random draws.
                let theirs = try shadow.pipeline.guidedLogits(
                    latents, r, conditioning: shadowConditioning, batch: batch,
                    h: h, w: w)
                var shadowRandomness = randomness
                let theirNext = scheduler.step(
                    logitsByPosition: theirs, codebook: codebook,
                    timestep: scheduler.timesteps[i], sample: latents, batch: batch,
                    startingMaskRatio: startingMaskRatio,
                    randomness: &shadowRandomness
                ).prevSample
                let ourNext = scheduler.step(
                    logitsByPosition: logits, codebook: codebook,
                    timestep: scheduler.timesteps[i], sample: latents, batch: batch,
                    startingMaskRatio: startingMaskRatio, randomness: &randomness
                ).prevSample
                shadow.observe(
                    StepComparison(
                        reference: logits, candidate: theirs, input: latents, referenceNext: ourNext,
                        candidateNext: theirNext, maskTokenId: Int64(maskTokenId), batch: batch,
                        codebook: codebook, positions: positions))
                latents = ourNext
            } else {
                latents =
                    scheduler.step(
                        logitsByPosition: logits, codebook: codebook, timestep: scheduler.timesteps[i],
                        sample: latents, batch: batch, startingMaskRatio: startingMaskRatio,
                        randomness: &randomness
                    ).prevSample
            }
            history.append(latents)
            stepSeconds.append(Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9)
            progress?(i - start + 1, r.steps - start)
        }
        let decodeStart = DispatchTime.now().uptimeNanoseconds
        let decoded = try vqvae.decode(latents, batch: batch, height: h, width: w)
        // PIL output: (x · 255).round() (half to even) as uint8, NHWC.
        var images = [UInt8](repeating: 0, count: batch * height * width * 3)
        let plane = height * width
        for b in 0..<batch {
            for c in 0..<3 {
                for p in 0..<plane {
                    let v = (decoded[(b * 3 + c) * plane + p] * 255).rounded(.toNearestOrEven)
                    images[(b * plane + p) * 3 + c] = UInt8(max(0, min(255, v)))
                }
            }
        }
        let end = DispatchTime.now().uptimeNanoseconds
        return GenerationResult(
            images: images, tokens: history, batch: batch, height: height, width: width,
            stepSeconds: stepSeconds,
            otherSeconds: Double(prepared - started + end - decodeStart) / 1e9)
    }

    static func nhwcToNCHW(_ x: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        let plane = height * width
        for b in 0..<batch {
            for p in 0..<plane {
                for c in 0..<3 { y[(b * 3 + c) * plane + p] = x[(b * plane + p) * 3 + c] }
            }
        }
        return y
    }
}

/// How a candidate's prediction at one sampling step compared with the reference's, on the same input tokens.
public struct StepComparison: Sendable {
    /// Mean over the masked positions of KL(p_reference ‖ p_candidate) of the token distributions, in nats.
    public let klMean: Double
    /// The largest KL over the masked positions.
    public let klMax: Double
    /// Fraction of masked positions where both predict the same most likely token.
    public let top1: Double
    /// Jaccard agreement of the sets of positions each left unmasked at this step (1 when both sets are empty).
    public let keptAgreement: Double
    /// Masked positions the step predicted.
    public let maskedPositions: Int
    /// Positions both left unmasked, and positions either left unmasked (the Jaccard terms).
    public let keptBoth: Int, keptEither: Int

    /// Compares logits [batch, positions, codebook] at the masked positions of `input`, and the positions the two
    /// steps unmasked.
    init(
        reference: [Float], candidate: [Float], input: [Int64], referenceNext: [Int64], candidateNext: [Int64],
        maskTokenId: Int64, batch: Int, codebook: Int, positions: Int
    ) {
        var klSum = 0.0, klMax = 0.0, same = 0, masked = 0
        var p = [Double](repeating: 0, count: codebook), q = [Double](repeating: 0, count: codebook)
        for b in 0..<batch {
            for s in 0..<positions where input[b * positions + s] == maskTokenId {
                masked += 1
                var pMax = -Double.infinity, qMax = -Double.infinity, pArg = 0, qArg = 0
                for v in 0..<codebook {
                    p[v] = Double(reference[(b * positions + s) * codebook + v])
                    q[v] = Double(candidate[(b * positions + s) * codebook + v])
                    if p[v] > pMax {
                        pMax = p[v]
                        pArg = v
                    }
                    if q[v] > qMax {
                        qMax = q[v]
                        qArg = v
                    }
                }
                if pArg == qArg { same += 1 }
                // log-softmax of each, then Σ p (log p − log q).
                var pSum = 0.0, qSum = 0.0
                for v in 0..<codebook {
                    pSum += Foundation.exp(p[v] - pMax)
                    qSum += Foundation.exp(q[v] - qMax)
                }
                let pLog = pMax + Foundation.log(pSum), qLog = qMax + Foundation.log(qSum)
                var kl = 0.0
                for v in 0..<codebook {
                    let lp = p[v] - pLog, lq = q[v] - qLog
                    kl += Foundation.exp(lp) * (lp - lq)
                }
                kl = max(0, kl)
                klSum += kl
                klMax = max(klMax, kl)
            }
        }
        var both = 0, either = 0
        for i in input.indices where input[i] == maskTokenId {
            let a = referenceNext[i] != maskTokenId, c = candidateNext[i] != maskTokenId
            if a && c { both += 1 }
            if a || c { either += 1 }
        }
        self.klMean = masked > 0 ? klSum / Double(masked) : 0
        self.klMax = klMax
        self.top1 = masked > 0 ? Double(same) / Double(masked) : 1
        self.keptAgreement = either > 0 ? Double(both) / Double(either) : 1
        self.maskedPositions = masked
        self.keptBoth = both
        self.keptEither = either
    }
}
