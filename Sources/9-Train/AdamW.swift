// torch.optim.AdamW (torch 2.9.1, the single-tensor CPU path `_single_tensor_adamw`), operation for operation, so that
// adapters trained here match adapters trained by train_amused.py step for step.

import AmusedModel

/// AdamW's settings; the defaults are train_amused.py's (`--learning_rate 3e-4`, betas (0.9, 0.999), eps 1e-8,
/// weight decay 1e-2, which applies to the LoRA weights: their names match none of its no-decay patterns).
public struct AdamWSettings: Sendable, Equatable, Codable {
    /// Learning rate.
    public var learningRate: Double = 3e-4
    /// β₁.
    public var beta1: Double = 0.9
    /// β₂.
    public var beta2: Double = 0.999
    /// ε, added to the bias-corrected √v.
    public var epsilon: Double = 1e-8
    /// Decoupled weight decay.
    public var weightDecay: Double = 1e-2

    /// train_amused.py's defaults.
    public init() {}
}

/// AdamW's moments for every adapter, and the step count.
public struct AdamW: Sendable, Equatable {
    /// The settings.
    public let settings: AdamWSettings
    /// Steps taken.
    public private(set) var step = 0
    /// First moments, in `LoRAAdapters` order: A's then B's per adapter.
    public private(set) var expAvg: [[Float]]
    /// Second moments, same layout.
    public private(set) var expAvgSq: [[Float]]

    /// Zero moments shaped like `adapters`.
    public init(_ settings: AdamWSettings, for adapters: LoRAAdapters) {
        self.settings = settings
        expAvg = adapters.adapters.flatMap {
            [[Float](repeating: 0, count: $0.a.count), [Float](repeating: 0, count: $0.b.count)]
        }
        expAvgSq = expAvg
    }

    /// Moments restored from a checkpoint (shapes checked against `adapters`).
    public init(
        _ settings: AdamWSettings, step: Int, expAvg: [[Float]], expAvgSq: [[Float]], for adapters: LoRAAdapters
    )
        throws(TrainError)
    {
        let shapes = adapters.adapters.flatMap { [$0.a.count, $0.b.count] }
        guard step >= 0, step < Int(Int32.max), expAvg.map(\.count) == shapes, expAvgSq.map(\.count) == shapes else {
            throw TrainError(
                "the optimizer state does not match the adapters (\(expAvg.count) moments for "
                    + "\(shapes.count) tensors); the checkpoint belongs to a different run")
        }
        self.settings = settings
        self.step = step
        self.expAvg = expAvg
        self.expAvgSq = expAvgSq
    }

    /// One AdamW step on every adapter, in torch's order of operations: decay, lerp the first moment, the second
    /// moment, then p −= (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε). Scalars are computed in double, as Python
    /// floats, and enter the float32 arithmetic where torch passes them to a tensor op.
    /// The gradients and the moments must be shaped like `adapters` (a programming error otherwise).
    public mutating func update(_ adapters: inout LoRAAdapters, with gradients: LoRAGradients) {
        precondition(
            gradients.a.map(\.count) == adapters.adapters.map(\.a.count)
                && gradients.b.map(\.count) == adapters.adapters.map(\.b.count)
                && expAvg.count == 2 * adapters.adapters.count, "gradients or moments not shaped like the adapters")
        step += 1
        let s = settings
        let decay = Float(1 - s.learningRate * s.weightDecay)
        let weight1 = Float(1 - s.beta1), beta2 = Float(s.beta2), weight2 = Float(1 - s.beta2)
        let correction1 = 1 - pow(s.beta1, Double(step)), correction2 = 1 - pow(s.beta2, Double(step))
        let stepSize = Float(s.learningRate / correction1), root2 = Float(correction2.squareRoot())
        let eps = Float(s.epsilon)
        func apply(_ p: inout [Float], _ g: [Float], _ slot: Int) {
            for i in p.indices {
                p[i] *= decay
                // lerp_(grad, w) for w < 0.5: self + w·(end − self).
                expAvg[slot][i] += weight1 * (g[i] - expAvg[slot][i])
                expAvgSq[slot][i] = expAvgSq[slot][i] * beta2 + weight2 * (g[i] * g[i])
                let denom = expAvgSq[slot][i].squareRoot() / root2 + eps
                p[i] += -stepSize * (expAvg[slot][i] / denom)
            }
        }
        for k in adapters.adapters.indices {
            apply(&adapters.adapters[k].a, gradients.a[k], 2 * k)
            apply(&adapters.adapters[k].b, gradients.b[k], 2 * k + 1)
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
