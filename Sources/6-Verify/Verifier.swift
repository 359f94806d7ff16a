// Runs a record's cases through the Swift graph and compares with the PyTorch outputs: the cases of one
// component here, the pipeline cases in PipelineParity.swift, traces in Traces.swift.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

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
    public init(
        record: ReferenceRecord, components: AmusedComponents, baseline: AmusedComponents? = nil,
        profile: ToleranceProfile, traceFolder: String? = nil
    ) {
        self.record = record
        self.components = components
        self.baseline = baseline
        self.profile = profile
        self.traceFolder = traceFolder
    }

    /// A verifier of `record` against the checkpoint at `modelPath` (default: the record's own model), with `lora`
    /// fused into it when given; `variant`, `layout` and `configs` as `Checkpoint` takes them.
    public init(
        record: ReferenceRecord, modelPath: String? = nil, profile: ToleranceProfile,
        traceFolder: String? = nil, lora: LoRAFusion? = nil, layout: Checkpoint.Layout? = nil,
        configs: String? = nil, variant: String? = nil
    ) throws {
        self.record = record
        self.components = try AmusedComponents(
            path: modelPath ?? record.modelPath, variant: variant, lora: lora,
            layout: layout, configs: configs)
        self.profile = profile
        self.traceFolder = traceFolder
        self.baseline = nil
    }

    /// Runs every case.
    public func run() throws -> VerifyReport {
        var results: [CaseResult] = []
        for c in record.cases { results.append(try check(c)) }
        return VerifyReport(
            record: record.folder, model: components.source, profile: profile.name,
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
                metrics.append(
                    .ids(
                        "\(c.name)/input_ids", ours: ours, reference: refIds,
                        minAgreement: try profile.value("tokenizer_min_agreement")))
            }
            let out = try encoder(refIds, batch: batch, trace: trace)
            // Quantized profiles bound the error relative to the largest reference value (activations of a trained
            // encoder are far larger than a random one's); fp32 bounds it absolutely.
            let relative = profile.optional("text_encoder_max_abs_relative")
            let tol = try relative ?? profile.value("text_encoder_max_abs")
            metrics.append(
                .floats(
                    "\(c.name)/hidden_states_penultimate", ours: out.penultimateHiddenStates,
                    reference: try record.tensor(c, "hidden_states_penultimate", rank: 3).floats(),
                    tolerance: tol, relative: relative != nil))
            metrics.append(
                .floats(
                    "\(c.name)/text_embeds", ours: out.textEmbeds,
                    reference: try record.tensor(c, "text_embeds", rank: 2).floats(),
                    tolerance: tol, relative: relative != nil))
        case "transformer":
            guard let transformer = components.transformer else {
                return skipped(c, "the checkpoint has no transformer")
            }
            let ids = try record.tensor(c, "input_ids", rank: 3)
            let batch = ids.shape[0]
            let cond = try transformer.conditioning(
                encoderHiddenStates: try record.tensor(c, "encoder_hidden_states", rank: 3).floats(),
                pooledTextEmb: try record.tensor(c, "pooled_text_emb", rank: 2).floats(),
                microConds: try record.tensor(c, "micro_conds", rank: 2).floats(), batch: batch, trace: trace)
            let logits = try transformer(
                try ids.int64s(), height: ids.shape[1], width: ids.shape[2], conditioning: cond,
                trace: trace)
            metrics.append(
                .floats(
                    "\(c.name)/logits", ours: logits,
                    reference: try record.tensor(c, "logits", rank: 4).floats(),
                    tolerance: try profile.value("transformer_max_abs_relative"), relative: true,
                    minCosine: try profile.value("transformer_min_cosine")))
        case "vq_decode":
            guard let vq = components.vqvae else { return skipped(c, "the checkpoint has no VQ model") }
            let ids = try record.tensor(c, "ids", rank: 3)
            let image = try vq.decode(
                try ids.int64s(), batch: ids.shape[0], height: ids.shape[1], width: ids.shape[2],
                trace: trace)
            metrics.append(
                .floats(
                    "\(c.name)/image", ours: image, reference: try record.tensor(c, "image", rank: 4).floats(),
                    tolerance: try profile.value("vq_decode_max_abs"), relative: false))
        case "vq_encode":
            guard let vq = components.vqvae else { return skipped(c, "the checkpoint has no VQ model") }
            let image = try record.tensor(c, "image", rank: 4)
            let ids = try vq.encode(
                try image.floats(), batch: image.shape[0], height: image.shape[2],
                width: image.shape[3], trace: trace)
            metrics.append(
                .ids(
                    "\(c.name)/ids", ours: ids, reference: try record.tensor(c, "ids", rank: 3).int64s(),
                    minAgreement: try profile.value("vq_encode_min_agreement")))
        case "text_to_image", "image_to_image", "inpaint":
            return try checkPipeline(c, start: start)
        default:
            return skipped(c, "unknown case kind \(c.kind)")
        }
        if let trace, let folder = traceFolder { try writeTrace(trace, case: c.name, folder: folder) }
        let failed = metrics.first { !$0.pass }
        return CaseResult(
            name: c.name, kind: c.kind, status: failed == nil ? .pass : .fail, metrics: metrics,
            note: failed.map { "\($0.tensor) (\($0.criterion))" },
            seconds: Date().timeIntervalSince(start))
    }
}
