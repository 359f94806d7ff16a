// What a check measures: per-tensor errors against the reference, and the quantized pipeline metrics against a
// float32 baseline.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

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

    static func floats(
        _ name: String, ours: [Float], reference: [Float], tolerance: Double, relative: Bool,
        minCosine: Double? = nil
    ) -> TensorMetrics {
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
        return TensorMetrics(
            tensor: name, maxAbs: maxAbs, meanAbs: n > 0 ? sumAbs / Double(n) : 0, cosine: cosine,
            maxReference: maxRef, agreement: nil, pass: pass, criterion: criterion)
    }

    static func ids(_ name: String, ours: [Int64], reference: [Int64], minAgreement: Double) -> TensorMetrics {
        let n = min(ours.count, reference.count)
        let same = (0..<n).filter { ours[$0] == reference[$0] }.count
        let agreement = reference.isEmpty ? 1 : Double(same) / Double(reference.count)
        let maxDiff = (0..<n).map { Double(abs(ours[$0] - reference[$0])) }.max() ?? 0
        return TensorMetrics(
            tensor: name, maxAbs: maxDiff, meanAbs: 0, cosine: 1, maxReference: 0,
            agreement: agreement, pass: ours.count == reference.count && agreement >= minAgreement,
            criterion: "agreement ≥ \(minAgreement)")
    }
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
