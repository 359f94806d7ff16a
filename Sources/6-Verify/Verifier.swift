// Runs a record's component cases through the Swift graph and compares with the PyTorch outputs.

import AmusedBind
import AmusedModel
import AmusedRead
import AmusedCore
import Foundation

/// Thresholds a check passes against, from `tolerance-profiles.json` (each with the reason for its value).
public struct ToleranceProfile: Sendable {
    /// The profile's name (`fp32`, …).
    public let name: String
    /// Threshold by key (`transformer_max_abs_relative`, …).
    public let thresholds: [String: Double]

    /// The threshold `key` when the profile defines it.
    public func optional(_ key: String) -> Double? { thresholds[key] }

    /// The threshold `key`.
    public func value(_ key: String) throws -> Double {
        guard let v = thresholds[key] else { throw VerifyError(path: "tolerance-profiles.json", field: key, "profile \(name) lacks it") }
        return v
    }

    /// Loads profile `name` from the shipped profiles file, or from `file` when given.
    public static func load(_ name: String, file: String? = nil) throws -> ToleranceProfile {
        let path = file ?? Bundle.module.path(forResource: "tolerance-profiles", ofType: "json") ?? "tolerance-profiles.json"
        let root = try Checkpoint.readJSON(path)
        guard let profile = root["profiles"]?[name]?.objectValue else {
            let known = root["profiles"]?.objectValue?.keys.joined(separator: ", ") ?? ""
            throw VerifyError(path: path, field: name, "no such tolerance profile (known: \(known))")
        }
        var thresholds: [String: Double] = [:]
        for (key, entry) in profile.entries {
            if let v = entry["value"]?.doubleValue { thresholds[key] = v }
        }
        return ToleranceProfile(name: name, thresholds: thresholds)
    }
}

/// Error statistics of one output tensor against its reference.
public struct TensorMetrics: Sendable {
    /// The record tensor compared (`<case>/<field>`).
    public let tensor: String
    /// max |ours − reference|.
    public let maxAbs: Double
    /// mean |ours − reference|.
    public let meanAbs: Double
    /// Cosine similarity of the two flattened tensors.
    public let cosine: Double
    /// max |reference|.
    public let maxReference: Double
    /// For integer outputs: the fraction of equal elements.
    public let agreement: Double?
    /// Whether this tensor is within tolerance.
    public let pass: Bool
    /// The tolerance that decided it, in words.
    public let criterion: String

    static func floats(_ name: String, ours: [Float], reference: [Float], tolerance: Double, relative: Bool,
                       minCosine: Double? = nil) -> TensorMetrics {
        var maxAbs = 0.0, sumAbs = 0.0, dot = 0.0, na = 0.0, nb = 0.0, maxRef = 0.0
        let n = min(ours.count, reference.count)
        for i in 0..<n {
            let a = Double(ours[i]), b = Double(reference[i])
            let d = abs(a - b)
            if d > maxAbs || d.isNaN { maxAbs = d.isNaN ? .infinity : d }
            sumAbs += d
            dot += a * b
            na += a * a
            nb += b * b
            maxRef = max(maxRef, abs(b))
        }
        let cosine = na == 0 && nb == 0 ? 1 : dot / ((na * nb).squareRoot() + 1e-300)
        let bound = relative ? tolerance * maxRef : tolerance
        var pass = ours.count == reference.count && maxAbs <= bound
        var criterion = relative ? "max abs ≤ \(tolerance) × max|ref| = \(bound)" : "max abs ≤ \(tolerance)"
        if let minCosine {
            pass = pass && cosine >= minCosine
            criterion += ", cosine ≥ \(minCosine)"
        }
        return TensorMetrics(tensor: name, maxAbs: maxAbs, meanAbs: n > 0 ? sumAbs / Double(n) : 0, cosine: cosine,
                             maxReference: maxRef, agreement: nil, pass: pass, criterion: criterion)
    }

    static func ids(_ name: String, ours: [Int64], reference: [Int64], minAgreement: Double) -> TensorMetrics {
        let n = min(ours.count, reference.count)
        let same = (0..<n).filter { ours[$0] == reference[$0] }.count
        let agreement = reference.isEmpty ? 1 : Double(same) / Double(reference.count)
        let maxDiff = (0..<n).map { Double(abs(ours[$0] - reference[$0])) }.max() ?? 0
        return TensorMetrics(tensor: name, maxAbs: maxDiff, meanAbs: 0, cosine: 1, maxReference: 0,
                             agreement: agreement, pass: ours.count == reference.count && agreement >= minAgreement,
                             criterion: "agreement ≥ \(minAgreement)")
    }
}

/// The outcome of one case.
public struct CaseResult: Sendable {
    /// pass, fail or skipped.
    public enum Status: String, Sendable {
        /// Every tensor within tolerance.
        case pass
        /// At least one tensor out of tolerance.
        case fail
        /// Not run (a kind this version does not check, or a component the checkpoint lacks).
        case skipped
    }

    /// The case name.
    public let name: String
    /// The case kind.
    public let kind: String
    /// The outcome.
    public var status: Status
    /// Metrics per compared tensor, in order.
    public let metrics: [TensorMetrics]
    /// Why the case was skipped, or which tensor failed first.
    public var note: String?
    /// Wall time of the Swift side, seconds.
    public var seconds: Double
    /// Pipeline cases: the fraction of identical tokens after each step.
    public var tokenAgreementPerStep: [Double]? = nil
    /// Pipeline cases: the first step (0-based) whose tokens differ, if any.
    public var firstDivergingStep: Int? = nil
    /// Pipeline cases under a quantized profile: the candidate against the float32 baseline.
    public var quantization: QuantizationMetrics? = nil
}

/// A masked image model's parity, quantized against float32, for one pipeline case. Per step (teacher-forced on the
/// baseline's tokens, same random draws): the KL divergence of the token distributions, top-1 agreement and the
/// agreement of the positions chosen to stay unmasked; at the end (each model on its own path): token agreement and
/// the PSNR of the images.
public struct QuantizationMetrics: Sendable {
    /// Mean KL(p_fp32 ‖ p_quantized) over masked positions, per step, nats.
    public let klMeanPerStep: [Double]
    /// Largest KL at any masked position, per step.
    public let klMaxPerStep: [Double]
    /// Top-1 agreement per step.
    public let top1PerStep: [Double]
    /// Jaccard agreement of the positions unmasked per step.
    public let keptAgreementPerStep: [Double]
    /// Over all steps, weighted by masked positions: mean KL, top-1 agreement; and the pooled unmasked-set agreement.
    public let klMean: Double, top1: Double, keptAgreement: Double
    /// Masked positions predicted over all steps (top-1 is judged from 16 on).
    public let maskedPredictions: Int
    /// Fraction of equal final tokens, free-running.
    public let finalTokenAgreement: Double
    /// PSNR of the final images, dB (infinite when identical).
    public let psnr: Double
    /// The thresholds applied: name, value, bound, whether it must be at most (true) or at least the bound, pass.
    public let checks: [(name: String, value: Double, bound: Double, atMost: Bool, pass: Bool)]

    /// True when every check passes.
    public var pass: Bool { checks.allSatisfy(\.pass) }
}

/// The result of checking a record.
public struct VerifyReport: Sendable {
    /// The record folder.
    public let record: String
    /// The checkpoint checked.
    public internal(set) var model: String
    /// The tolerance profile used.
    public let profile: String
    /// Per case.
    public let cases: [CaseResult]
    /// Whether cases that could not run (unknown kind, missing component) are accepted; by default they fail the run,
    /// so that a record whose cases this version cannot check never reads as a pass.
    public var skipsAllowed = false

    /// The same report naming `new` as the model where it named `old` (a bundle is checked at its temporary path and
    /// reported by its destination).
    public func renamingModel(_ old: String, to new: String) -> VerifyReport {
        var renamed = self
        renamed.model = model.replacingOccurrences(of: old, with: new)
        return renamed
    }

    /// Cases not run.
    public var skippedCount: Int { cases.filter { $0.status == .skipped }.count }

    /// True when no case failed, at least one passed, and no case was skipped (unless `skipsAllowed`).
    public var pass: Bool {
        !cases.contains { $0.status == .fail } && cases.contains { $0.status == .pass }
            && (skipsAllowed || skippedCount == 0)
    }

    /// The report as one JSON document: `{"pass", "record", "model", "profile", "cases": [{"name", "kind", "pass",
    /// "status", "metrics", "note"}]}`.
    public var json: JSONValue { json(includeTimings: true) }

    /// The report as JSON; without timings it is the same for the same inputs (what bundles store).
    public func json(includeTimings: Bool) -> JSONValue {
        func number(_ d: Double) -> JSONValue {
            d.isFinite ? .number(d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)") : .string("\(d)")
        }
        var root = JSONObject()
        root.insert("pass", .bool(pass))
        root.insert("record", .string(record))
        root.insert("model", .string(model))
        root.insert("profile", .string(profile))
        root.insert("skipped", .number(String(skippedCount)))
        root.insert("skips_allowed", .bool(skipsAllowed))
        root.insert("cases", .array(cases.map { c in
            var o = JSONObject()
            o.insert("name", .string(c.name))
            o.insert("kind", .string(c.kind))
            o.insert("pass", c.status == .skipped ? .null : .bool(c.status == .pass))
            o.insert("status", .string(c.status.rawValue))
            o.insert("metrics", .array(c.metrics.map { m in
                var t = JSONObject()
                t.insert("tensor", .string(m.tensor))
                t.insert("pass", .bool(m.pass))
                t.insert("max_abs", number(m.maxAbs))
                t.insert("mean_abs", number(m.meanAbs))
                t.insert("cosine", number(m.cosine))
                t.insert("max_reference", number(m.maxReference))
                if let a = m.agreement { t.insert("agreement", number(a)) }
                t.insert("criterion", .string(m.criterion))
                return .object(t)
            }))
            o.insert("note", c.note.map(JSONValue.string) ?? .null)
            if let steps = c.tokenAgreementPerStep {
                o.insert("token_agreement_per_step", .array(steps.map(number)))
                o.insert("first_diverging_step", c.firstDivergingStep.map { .number(String($0)) } ?? .null)
            }
            if let q = c.quantization {
                var j = JSONObject()
                j.insert("kl_mean_per_step", .array(q.klMeanPerStep.map(number)))
                j.insert("kl_max_per_step", .array(q.klMaxPerStep.map(number)))
                j.insert("top1_per_step", .array(q.top1PerStep.map(number)))
                j.insert("kept_agreement_per_step", .array(q.keptAgreementPerStep.map(number)))
                j.insert("kl_mean", number(q.klMean))
                j.insert("top1", number(q.top1))
                j.insert("kept_agreement", number(q.keptAgreement))
                j.insert("masked_predictions", .number(String(q.maskedPredictions)))
                j.insert("final_token_agreement", number(q.finalTokenAgreement))
                j.insert("psnr_db", number(q.psnr))
                j.insert("checks", .array(q.checks.map { k in
                    var e = JSONObject()
                    e.insert("name", .string(k.name))
                    e.insert("value", number(k.value))
                    e.insert(k.atMost ? "max" : "min", number(k.bound))
                    e.insert("pass", .bool(k.pass))
                    return .object(e)
                }))
                o.insert("quantization", .object(j))
            }
            if includeTimings { o.insert("seconds", number(c.seconds)) }
            return .object(o)
        }))
        return .object(root)
    }

    /// A human-readable table.
    public var text: String {
        var out = "record: \(record)\nmodel:  \(model)\nprofile: \(profile)\n\n"
        for c in cases {
            out += "\(c.status.rawValue.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0)) \(c.name) (\(c.kind))"
            if c.status == .skipped { out += ": \(c.note ?? "")\n"; continue }
            out += String(format: "  %.2f s\n", c.seconds)
            for m in c.metrics {
                if let a = m.agreement {
                    out += String(format: "    %@ %@  agreement %.6f\n", m.pass ? "ok  " : "FAIL", m.tensor, a)
                } else {
                    out += String(format: "    %@ %@  max abs %.3e  mean abs %.3e  cosine %.9f  (max |ref| %.3g)\n",
                                  m.pass ? "ok  " : "FAIL", m.tensor, m.maxAbs, m.meanAbs, m.cosine, m.maxReference)
                }
            }
            if let steps = c.tokenAgreementPerStep {
                out += "    token agreement per step: " + steps.map { String(format: "%.4f", $0) }.joined(separator: " ")
                out += c.firstDivergingStep.map { "  (first divergence at step \($0))\n" } ?? "  (identical at every step)\n"
            }
            if let q = c.quantization {
                func row(_ label: String, _ values: [Double], _ format: String) -> String {
                    "    \(label): " + values.map { String(format: format, $0) }.joined(separator: " ") + "\n"
                }
                out += row("KL per step (mean, nats)", q.klMeanPerStep, "%.2e")
                out += row("top-1 agreement per step", q.top1PerStep, "%.4f")
                out += row("unmasked-set agreement  ", q.keptAgreementPerStep, "%.4f")
                out += String(format: "    final token agreement %.4f, image PSNR %.2f dB (against the float32 baseline)\n",
                              q.finalTokenAgreement, q.psnr)
                for k in q.checks {
                    out += "    \(k.pass ? "ok  " : "FAIL") \(k.name) \(String(format: "%.4g", k.value)) "
                        + "\(k.atMost ? "≤" : "≥") \(k.bound)\n"
                }
            }
            if let note = c.note, c.status == .fail { out += "    first tensor out of tolerance: \(note)\n" }
        }
        let ran = cases.filter { $0.status != .skipped }
        out += "\n\(ran.filter { $0.status == .pass }.count) passed, \(ran.filter { $0.status == .fail }.count) failed"
        let skipped = cases.count - ran.count
        if skipped > 0 {
            out += ", \(skipped) skipped" + (skipsAllowed ? "" : " (a skipped case fails the run; --allow-skip accepts them)")
        }
        return out + "\n"
    }
}

/// Checks the component cases of a record against a checkpoint.
public struct Verifier {
    /// The record.
    public let record: ReferenceRecord
    /// The components under test.
    public let components: AmusedComponents
    /// The thresholds.
    public let profile: ToleranceProfile
    /// Where to write per-case traces (`verify --trace`), if anywhere.
    public let traceFolder: String?
    /// The float32 model quantized metrics compare against (pipeline cases under a quantized profile).
    public let baseline: AmusedComponents?

    /// A verifier of `record` against components loaded elsewhere (a bundle); `baseline` is the float32 model the
    /// quantized metrics compare against.
    public init(record: ReferenceRecord, components: AmusedComponents, baseline: AmusedComponents? = nil,
                profile: ToleranceProfile, traceFolder: String? = nil) {
        self.record = record
        self.components = components
        self.baseline = baseline
        self.profile = profile
        self.traceFolder = traceFolder
    }

    /// A verifier of `record` against the checkpoint at `modelPath` (default: the record's own model), with `lora`
    /// fused into it when given; `variant`, `layout` and `configs` as `Checkpoint` takes them.
    public init(record: ReferenceRecord, modelPath: String? = nil, profile: ToleranceProfile,
                traceFolder: String? = nil, lora: LoRAFusion? = nil, layout: Checkpoint.Layout? = nil,
                configs: String? = nil, variant: String? = nil) throws {
        self.record = record
        self.components = try AmusedComponents(path: modelPath ?? record.modelPath, variant: variant, lora: lora,
                                               layout: layout, configs: configs)
        self.profile = profile
        self.traceFolder = traceFolder
        self.baseline = nil
    }

    /// Runs every case.
    public func run() throws -> VerifyReport {
        var results: [CaseResult] = []
        for c in record.cases { results.append(try check(c)) }
        return VerifyReport(record: record.folder, model: components.source, profile: profile.name,
                            cases: results)
    }

    func skipped(_ c: RecordCase, _ why: String) -> CaseResult {
        CaseResult(name: c.name, kind: c.kind, status: .skipped, metrics: [], note: why, seconds: 0)
    }

    /// Runs one case.
    public func check(_ c: RecordCase) throws -> CaseResult {
        let start = Date()
        let trace = traceFolder.map { _ in Trace() }
        var metrics: [TensorMetrics] = []
        switch c.kind {
        case "text_encoder":
            guard let encoder = components.textEncoder else { return skipped(c, "the checkpoint has no text encoder") }
            let ids = try record.tensor(c, "input_ids", rank: 2)
            let batch = ids.shape[0]
            let refIds = try ids.int64s()
            if let tokenizer = components.tokenizer, let prompts = c.json["prompts"]?.arrayValue {
                let ours = prompts.compactMap(\.stringValue).flatMap { tokenizer.encode($0) }
                metrics.append(.ids("\(c.name)/input_ids", ours: ours, reference: refIds,
                                    minAgreement: try profile.value("tokenizer_min_agreement")))
            }
            let out = try encoder(refIds, batch: batch, trace: trace)
            // Quantized profiles bound the error relative to the largest reference value (activations of a trained
            // encoder are far larger than a random one's); fp32 bounds it absolutely.
            let relative = profile.optional("text_encoder_max_abs_relative")
            let tol = try relative ?? profile.value("text_encoder_max_abs")
            metrics.append(.floats("\(c.name)/hidden_states_penultimate", ours: out.penultimateHiddenStates,
                                   reference: try record.tensor(c, "hidden_states_penultimate", rank: 3).floats(),
                                   tolerance: tol, relative: relative != nil))
            metrics.append(.floats("\(c.name)/text_embeds", ours: out.textEmbeds,
                                   reference: try record.tensor(c, "text_embeds", rank: 2).floats(),
                                   tolerance: tol, relative: relative != nil))
        case "transformer":
            guard let transformer = components.transformer else { return skipped(c, "the checkpoint has no transformer") }
            let ids = try record.tensor(c, "input_ids", rank: 3)
            let batch = ids.shape[0]
            let cond = try transformer.conditioning(
                encoderHiddenStates: try record.tensor(c, "encoder_hidden_states", rank: 3).floats(),
                pooledTextEmb: try record.tensor(c, "pooled_text_emb", rank: 2).floats(),
                microConds: try record.tensor(c, "micro_conds", rank: 2).floats(), batch: batch, trace: trace)
            let logits = try transformer(try ids.int64s(), height: ids.shape[1], width: ids.shape[2], conditioning: cond,
                                         trace: trace)
            metrics.append(.floats("\(c.name)/logits", ours: logits,
                                   reference: try record.tensor(c, "logits", rank: 4).floats(),
                                   tolerance: try profile.value("transformer_max_abs_relative"), relative: true,
                                   minCosine: try profile.value("transformer_min_cosine")))
        case "vq_decode":
            guard let vq = components.vqvae else { return skipped(c, "the checkpoint has no VQ model") }
            let ids = try record.tensor(c, "ids", rank: 3)
            let image = try vq.decode(try ids.int64s(), batch: ids.shape[0], height: ids.shape[1], width: ids.shape[2],
                                      trace: trace)
            metrics.append(.floats("\(c.name)/image", ours: image, reference: try record.tensor(c, "image", rank: 4).floats(),
                                   tolerance: try profile.value("vq_decode_max_abs"), relative: false))
        case "vq_encode":
            guard let vq = components.vqvae else { return skipped(c, "the checkpoint has no VQ model") }
            let image = try record.tensor(c, "image", rank: 4)
            let ids = try vq.encode(try image.floats(), batch: image.shape[0], height: image.shape[2],
                                    width: image.shape[3], trace: trace)
            metrics.append(.ids("\(c.name)/ids", ours: ids, reference: try record.tensor(c, "ids", rank: 3).int64s(),
                                minAgreement: try profile.value("vq_encode_min_agreement")))
        case "text_to_image", "image_to_image", "inpaint":
            return try checkPipeline(c, start: start)
        default:
            return skipped(c, "unknown case kind \(c.kind)")
        }
        if let trace, let folder = traceFolder { try writeTrace(trace, case: c.name, folder: folder) }
        let failed = metrics.first { !$0.pass }
        return CaseResult(name: c.name, kind: c.kind, status: failed == nil ? .pass : .fail, metrics: metrics,
                          note: failed.map { "\($0.tensor) (\($0.criterion))" },
                          seconds: Date().timeIntervalSince(start))
    }

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
        else { throw VerifyError(path: record.folder + "/record.json", field: c.name, "pipeline case lacks prompts, seed, steps or guidance_scale") }
        let expectedTokens = try record.tensor(c, "tokens", rank: 4)
        let expectedImage = try record.tensor(c, "image", rank: 4)
        var request = GenerationRequest(prompts: prompts, height: j["height"]?.intValue ?? expectedImage.shape[1],
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
                divergence = "step \(s), image \(i / grid), token (\((i % grid) / expectedTokens.shape[3]), "
                    + "\(i % expectedTokens.shape[3])): \(ours[i]) vs \(theirs[theirs.startIndex + i])"
            }
        }
        let stepsMatch = generated.tokens.count == expectedTokens.shape[0]
        let tokensPass = stepsMatch && firstDivergence == nil
        var metrics = [TensorMetrics.ids("\(c.name)/tokens", ours: Array(generated.tokens.joined()), reference: reference,
                                         minAgreement: try profile.value("pipeline_min_token_agreement"))]
        let ourPixels = generated.images.map { Float($0) }, theirPixels = try expectedImage.floats()
        // Pixels are compared only where the tokens agree; a different token legitimately changes its patch.
        metrics.append(.floats("\(c.name)/image", ours: ourPixels, reference: theirPixels,
                               tolerance: tokensPass ? try profile.value("pipeline_image_max_levels") : .infinity,
                               relative: false))
        var outcome = CaseResult(
            name: c.name, kind: c.kind, status: metrics.allSatisfy(\.pass) && stepsMatch ? .pass : .fail,
            metrics: metrics,
            note: !stepsMatch ? "ran \(generated.tokens.count) steps, the record has \(expectedTokens.shape[0])"
                : divergence.map { "tokens diverge at \($0)" } ?? metrics.first { !$0.pass }.map { "\($0.tensor) (\($0.criterion))" },
            seconds: Date().timeIntervalSince(start))
        outcome.tokenAgreementPerStep = agreement
        outcome.firstDivergingStep = firstDivergence
        if profile.optional("quantized_max_mean_kl") != nil {
            guard let baseline, let reference = try? AmusedPipeline(components: baseline) else {
                throw VerifyError(path: record.folder, field: c.name, "a quantized profile needs the float32 baseline "
                                  + "model (the record's own model, or --baseline) to compare the pipeline against")
            }
            let q = try quantizationMetrics(reference: reference, candidate: pipeline, request: request, candidateResult: generated)
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
    func quantizationMetrics(reference: AmusedPipeline, candidate: AmusedPipeline, request: GenerationRequest,
                             candidateResult: GenerationResult) throws -> QuantizationMetrics {
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
        return QuantizationMetrics(klMeanPerStep: kl, klMaxPerStep: steps.map(\.klMax), top1PerStep: top1,
                                   keptAgreementPerStep: kept, klMean: klAll, top1: top1All, keptAgreement: keptAll,
                                   maskedPredictions: steps.reduce(0) { $0 + $1.maskedPositions },
                                   finalTokenAgreement: finalAgreement, psnr: psnr,
                                   checks: checks)
    }

    /// Writes the Swift activations of a case to `<folder>/<case>.swift.safetensors`.
    func writeTrace(_ trace: Trace, case name: String, folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let tensors = try trace.entries.map { entry in (entry.name, try Tensor(floats: entry.values, shape: entry.shape)) }
        try SafetensorsWriter.write(tensors, metadata: [("trace_order", trace.entries.map(\.name).joined(separator: ","))],
                                    to: "\(folder)/\(name).swift.safetensors")
    }
}

/// Compares a Swift trace with a PyTorch trace of the same case (same names, same layouts) and returns, in the
/// Swift trace's order, each activation's max abs error relative to the reference's largest magnitude.
public func compareTraces(swift: String, torch: String) throws -> [(name: String, relative: Double, maxAbs: Double)] {
    let ours = try SafetensorsFile(path: swift), theirs = try SafetensorsFile(path: torch)
    let order = ours.metadataValue("trace_order")?.split(separator: ",").map(String.init) ?? ours.names
    var rows: [(String, Double, Double)] = []
    for name in order where theirs.names.contains(name) {
        let a = try ours.tensor(named: name).floats(), b = try theirs.tensor(named: name).floats()
        let m = TensorMetrics.floats(name, ours: a, reference: b, tolerance: 0, relative: false)
        rows.append((name, m.maxReference > 0 ? m.maxAbs / m.maxReference : m.maxAbs, m.maxAbs))
    }
    return rows
}
