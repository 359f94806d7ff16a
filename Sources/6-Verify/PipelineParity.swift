// Pipeline cases (text-to-image, image-to-image, inpainting): the sampler replayed seed for seed, token agreement
// per step, the final pixels; under a quantized profile, teacher-forced metrics against the float32 baseline.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

extension Verifier {
    /// Runs a pipeline case seed for seed and compares the tokens after every step and the final pixels.
    func checkPipeline(_ c: RecordCase, start: Date) throws -> CaseResult {
        let pipeline: AmusedPipeline
        do {
            pipeline = try AmusedPipeline(components: components)
        } catch {
            return skipped(c, error.message)
        }
        let j = c.json
        guard let prompts = j["prompts"]?.arrayValue?.compactMap(\.stringValue), let seed = j["seed"]?.uint64Value,
            let steps = j["steps"]?.intValue, let guidance = j["guidance_scale"]?.doubleValue
        else {
            throw VerifyError(
                path: record.folder + "/record.json", field: c.name,
                "pipeline case lacks prompts, seed, steps or guidance_scale")
        }
        let expectedTokens = try record.tensor(c, "tokens", rank: 4)
        let expectedImage = try record.tensor(c, "image", rank: 4)
        var request = GenerationRequest(
            prompts: prompts, height: j["height"]?.intValue ?? expectedImage.shape[1],
            width: j["width"]?.intValue ?? expectedImage.shape[2])
        request.negativePrompts = j["negative_prompts"]?.arrayValue?.compactMap(\.stringValue)
        request.seed = seed
        request.steps = steps
        request.guidanceScale = Float(guidance)
        if let t = j["temperature"]?.arrayValue, t.count == 2, let t0 = t[0].doubleValue, let t1 = t[1].doubleValue {
            request.temperature = (Float(t0), Float(t1))
        }
        request.aestheticScore = Float(j["aesthetic_score"]?.doubleValue ?? 6)
        if let crop = j["crop_coord"]?.arrayValue, crop.count == 2 {
            request.cropCoord = (crop[0].intValue ?? 0, crop[1].intValue ?? 0)
        }
        if c.kind != "text_to_image" {
            let image = try record.tensor(c, "init_image", rank: 4)
            request.height = image.shape[1]
            request.width = image.shape[2]
            request.initImages = try image.int64s().map { UInt8(truncatingIfNeeded: $0) }
            request.strength = j["strength"]?.doubleValue
            if c.kind == "inpaint" {
                request.mask = try record.tensor(c, "mask", rank: 3).int64s().map { UInt8(truncatingIfNeeded: $0) }
            }
        }
        let generated = try pipeline.generate(request)
        let reference = try expectedTokens.int64s()
        let perStep = expectedTokens.shape[1] * expectedTokens.shape[2] * expectedTokens.shape[3]
        var agreement: [Double] = []
        var firstDivergence: Int? = nil
        var divergence: String? = nil
        for (s, ours) in generated.tokens.enumerated() where s < expectedTokens.shape[0] {
            let theirs = reference[(s * perStep)..<((s + 1) * perStep)]
            let same = zip(ours, theirs).filter { $0 == $1 }.count
            agreement.append(Double(same) / Double(perStep))
            if same != perStep && firstDivergence == nil {
                firstDivergence = s
                let i = zip(ours, theirs).enumerated().first { $1.0 != $1.1 }!.offset
                let grid = expectedTokens.shape[2] * expectedTokens.shape[3]
                divergence =
                    "step \(s), image \(i / grid), token (\((i % grid) / expectedTokens.shape[3]), "
                    + "\(i % expectedTokens.shape[3])): \(ours[i]) vs \(theirs[theirs.startIndex + i])"
            }
        }
        let stepsMatch = generated.tokens.count == expectedTokens.shape[0]
        let tokensPass = stepsMatch && firstDivergence == nil
        var metrics = [
            TensorMetrics.ids(
                "\(c.name)/tokens", ours: Array(generated.tokens.joined()), reference: reference,
                minAgreement: try profile.value("pipeline_min_token_agreement"))
        ]
        let ourPixels = generated.images.map { Float($0) }, theirPixels = try expectedImage.floats()
        // Pixels are compared only where the tokens agree; a different token legitimately changes its patch.
        metrics.append(
            .floats(
                "\(c.name)/image", ours: ourPixels, reference: theirPixels,
                tolerance: tokensPass ? try profile.value("pipeline_image_max_levels") : .infinity,
                relative: false))
        var outcome = CaseResult(
            name: c.name, kind: c.kind, status: metrics.allSatisfy(\.pass) && stepsMatch ? .pass : .fail,
            metrics: metrics,
            note: !stepsMatch
                ? "ran \(generated.tokens.count) steps, the record has \(expectedTokens.shape[0])"
                : divergence.map { "tokens diverge at \($0)" }
                    ?? metrics.first { !$0.pass }.map { "\($0.tensor) (\($0.criterion))" },
            seconds: Date().timeIntervalSince(start))
        outcome.tokenAgreementPerStep = agreement
        outcome.firstDivergingStep = firstDivergence
        if profile.optional("quantized_max_mean_kl") != nil {
            guard let baseline else {
                throw VerifyError(
                    path: record.folder, field: c.name,
                    "a quantized profile needs the float32 baseline "
                        + "model (the record's own model, or --baseline) to compare the pipeline against")
            }
            let reference = try AmusedPipeline(components: baseline)  // its own error names what the baseline lacks
            let q = try quantizationMetrics(
                reference: reference, candidate: pipeline, request: request, candidateResult: generated)
            outcome.quantization = q
            // Under a quantized profile the verdict is the quantized metrics (the record's exact tokens are reported).
            outcome.status = q.pass && stepsMatch ? .pass : .fail
            outcome.seconds = Date().timeIntervalSince(start)
            if let failed = q.checks.first(where: { !$0.pass }) {
                outcome.note = "\(failed.name) = \(failed.value) (must be \(failed.atMost ? "≤" : "≥") \(failed.bound))"
            }
        }
        return outcome
    }

    /// The quantized metrics of `candidate` against the float32 `reference` pipeline on `request`.
    func quantizationMetrics(
        reference: AmusedPipeline, candidate: AmusedPipeline, request: GenerationRequest,
        candidateResult: GenerationResult
    ) throws -> QuantizationMetrics {
        let (baseline, steps) = try reference.compare(request, candidate: candidate)
        let ours = candidateResult.tokens.last ?? [], theirs = baseline.tokens.last ?? []
        let same = zip(ours, theirs).filter { $0 == $1 }.count
        let finalAgreement = theirs.isEmpty ? 1 : Double(same) / Double(theirs.count)
        var squared = 0.0
        for (a, b) in zip(candidateResult.images, baseline.images) {
            let d = Double(a) - Double(b)
            squared += d * d
        }
        let mse = squared / Double(max(1, baseline.images.count))
        let psnr = mse == 0 ? Double.infinity : 10 * log10(255 * 255 / mse)
        let kl = steps.map(\.klMean), top1 = steps.map(\.top1), kept = steps.map(\.keptAgreement)
        let masked = Double(max(1, steps.reduce(0) { $0 + $1.maskedPositions }))
        let klAll = steps.reduce(0) { $0 + $1.klMean * Double($1.maskedPositions) } / masked
        let top1All = steps.reduce(0) { $0 + $1.top1 * Double($1.maskedPositions) } / masked
        let either = steps.reduce(0) { $0 + $1.keptEither }
        let keptAll = either == 0 ? 1 : Double(steps.reduce(0) { $0 + $1.keptBoth }) / Double(either)
        var checks: [(String, Double, Double, Bool, Bool)] = []
        func check(_ name: String, _ value: Double, _ key: String, atMost: Bool) {
            guard let bound = profile.optional(key) else { return }
            // Agreement of the most likely token is noise below 16 predictions (strength-1.0 image-to-image masks one
            // or two positions per step); the KL still counts.
            if key == "quantized_min_top1" && steps.reduce(0, { $0 + $1.maskedPositions }) < 16 { return }
            checks.append((name, value, bound, atMost, atMost ? value <= bound : value >= bound))
        }
        check("mean KL over all masked predictions (nats)", klAll, "quantized_max_mean_kl", atMost: true)
        check("top-1 agreement over all masked predictions", top1All, "quantized_min_top1", atMost: false)
        check("unmasked-set agreement (pooled over steps)", keptAll, "quantized_min_kept_agreement", atMost: false)
        check("final token agreement", finalAgreement, "quantized_min_final_token_agreement", atMost: false)
        check("image PSNR dB", psnr, "quantized_min_psnr", atMost: false)
        return QuantizationMetrics(
            klMeanPerStep: kl, klMaxPerStep: steps.map(\.klMax), top1PerStep: top1,
            keptAgreementPerStep: kept, klMean: klAll, top1: top1All, keptAgreement: keptAll,
            maskedPredictions: steps.reduce(0) { $0 + $1.maskedPositions },
            finalTokenAgreement: finalAgreement, psnr: psnr,
            checks: checks)
    }
}
