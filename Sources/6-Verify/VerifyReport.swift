// The outcome of a record: per case, and as JSON (what bundles store) and as the text `amused verify` prints.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

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
        let number = { (d: Double) in JSONValue.numeric(d) }
        var root = JSONObject()
        root.insert("pass", .bool(pass))
        root.insert("record", .string(record))
        root.insert("model", .string(model))
        root.insert("profile", .string(profile))
        root.insert("skipped", .number(String(skippedCount)))
        root.insert("skips_allowed", .bool(skipsAllowed))
        root.insert(
            "cases",
            .array(
                cases.map { c in
                    var o = JSONObject()
                    o.insert("name", .string(c.name))
                    o.insert("kind", .string(c.kind))
                    o.insert("pass", c.status == .skipped ? .null : .bool(c.status == .pass))
                    o.insert("status", .string(c.status.rawValue))
                    o.insert(
                        "metrics",
                        .array(
                            c.metrics.map { m in
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
                        j.insert(
                            "checks",
                            .array(
                                q.checks.map { k in
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
            out +=
                "\(c.status.rawValue.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0)) \(c.name) (\(c.kind))"
            if c.status == .skipped {
                out += ": \(c.note ?? "")\n"
                continue
            }
            out += String(format: "  %.2f s\n", c.seconds)
            for m in c.metrics {
                if let a = m.agreement {
                    out += String(format: "    %@ %@  agreement %.6f\n", m.pass ? "ok  " : "FAIL", m.tensor, a)
                } else {
                    out += String(
                        format: "    %@ %@  max abs %.3e  mean abs %.3e  cosine %.9f  (max |ref| %.3g)\n",
                        m.pass ? "ok  " : "FAIL", m.tensor, m.maxAbs, m.meanAbs, m.cosine, m.maxReference)
                }
            }
            if let steps = c.tokenAgreementPerStep {
                out +=
                    "    token agreement per step: " + steps.map { String(format: "%.4f", $0) }.joined(separator: " ")
                out +=
                    c.firstDivergingStep.map { "  (first divergence at step \($0))\n" }
                    ?? "  (identical at every step)\n"
            }
            if let q = c.quantization {
                func row(_ label: String, _ values: [Double], _ format: String) -> String {
                    "    \(label): " + values.map { String(format: format, $0) }.joined(separator: " ") + "\n"
                }
                out += row("KL per step (mean, nats)", q.klMeanPerStep, "%.2e")
                out += row("top-1 agreement per step", q.top1PerStep, "%.4f")
                out += row("unmasked-set agreement  ", q.keptAgreementPerStep, "%.4f")
                out += String(
                    format: "    final token agreement %.4f, image PSNR %.2f dB (against the float32 baseline)\n",
                    q.finalTokenAgreement, q.psnr)
                for k in q.checks {
                    out +=
                        "    \(k.pass ? "ok  " : "FAIL") \(k.name) \(String(format: "%.4g", k.value)) "
                        + "\(k.atMost ? "≤" : "≥") \(k.bound)\n"
                }
            }
            if let note = c.note, c.status == .fail { out += "    first tensor out of tolerance: \(note)\n" }
        }
        let ran = cases.filter { $0.status != .skipped }
        out += "\n\(ran.filter { $0.status == .pass }.count) passed, \(ran.filter { $0.status == .fail }.count) failed"
        let skipped = cases.count - ran.count
        if skipped > 0 {
            out +=
                ", \(skipped) skipped"
                + (skipsAllowed ? "" : " (a skipped case fails the run; --allow-skip accepts them)")
        }
        return out + "\n"
    }
}
