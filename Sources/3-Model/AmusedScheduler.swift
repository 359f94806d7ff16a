// port of diffusers/schedulers/scheduling_amused.py (AmusedScheduler), v0.35.2 — float32 arithmetic in torch's order.

import AmusedKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How many tokens stay masked after each step.
public enum MaskingSchedule: String, Sendable {
    /// cos(ratio · π/2) (the default).
    case cosine
    /// 1 − ratio (the inpainting pipeline switches to it).
    case linear
}

/// aMUSEd's sampler: every step samples all masked tokens from the model's distribution, then re-masks the least
/// confident ones (confidence perturbed by temperature-scaled Gumbel noise) so that fewer stay masked each step.
public struct AmusedScheduler: Sendable {
    /// The mask token id (vocab_size − 1 = 8255 for the released models).
    public let maskTokenId: Int64
    /// The masking schedule.
    public var schedule: MaskingSchedule
    /// Timesteps N−1 … 0.
    public private(set) var timesteps: [Int] = []
    /// Temperature per step.
    public private(set) var temperatures: [Float] = []

    /// A scheduler for `maskTokenId` with `schedule`.
    public init(maskTokenId: Int, schedule: MaskingSchedule = .cosine) {
        self.maskTokenId = Int64(maskTokenId)
        self.schedule = schedule
    }

    /// `set_timesteps(N, temperature)`: timesteps [N−1 … 0] and `torch.linspace(t0, t1, N)` temperatures.
    public mutating func setTimesteps(_ n: Int, temperature: (Float, Float) = (2, 0)) {
        timesteps = Array((0..<n).reversed())
        temperatures = Self.linspace(temperature.0, temperature.1, n)
    }

    /// torch.linspace for float32 on the CPU: step = (end − start)/(n − 1) in float32; the first half counts up
    /// from start, the second half down from end.
    static func linspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        guard n > 1 else { return n == 1 ? [start] : [] }
        let step = (end - start) / Float(n - 1)
        let halfway = n / 2
        return (0..<n).map { i in i < halfway ? start + step * Float(i) : end - step * Float(n - i - 1) }
    }

    /// The masking ratio for the step at `stepIndex` (float32, as torch computes `cos(ratio·π/2)` or `1 − ratio`).
    func maskRatio(stepIndex: Int) -> Float {
        let ratio = Float(stepIndex + 1) / Float(timesteps.count)
        switch schedule {
        // torch multiplies by math.pi rounded to float32 (nearest), not by Swift's Float.pi (rounded down).
        case .cosine: return cosf(ratio * Float(Double.pi) / 2)
        case .linear: return 1 - ratio
        }
    }

    /// `add_noise`: each token becomes the mask token with probability mask_ratio(timestep) (one uniform per token).
    public func addNoise(_ sample: [Int64], timestep: Int, randomness: inout some SamplerRandomness) -> [Int64] {
        let ratio = maskRatio(stepIndex: timesteps.firstIndex(of: timestep) ?? 0)
        let u = randomness.uniform(count: sample.count)
        return zip(sample, u).map { $1 < ratio ? maskTokenId : $0 }
    }

    /// One step. `rows` are the logits as [batch, positions, codebook] (`UVit2DModel.logitsByPosition`, guidance
    /// already applied): one contiguous row per position, the layout the softmax reads. `sample` is
    /// [batch, positions]. Returns the next sample and the predicted original.
    public func step(
        logitsByPosition rows: [Float], codebook: Int, timestep: Int, sample: [Int64], batch: Int,
        startingMaskRatio: Float = 1, randomness: inout some SamplerRandomness
    )
        -> (prevSample: [Int64], predOriginal: [Int64])
    {
        let positions = sample.count / batch
        precondition(rows.count == batch * positions * codebook, "logits must be [batch, positions, codebook]")
        // probs = softmax over the codebook for each position, in float32 (temperature is not applied here). Rows are
        // independent, so splitting them over the cores gives the same bits.
        var probs = [Float](repeating: 0, count: batch * positions * codebook)
        rows.withUnsafeBufferPointer { lp in
            probs.withUnsafeMutableBufferPointer { pp in
                let x = SharedPointer(UnsafeMutablePointer(mutating: lp.baseAddress!)),
                    out = SharedPointer(pp.baseAddress!)
                Parallel.chunks(batch * positions, cost: 8 * codebook) { range in
                    for row in range {
                        let src = x.p + row * codebook, dst = out.p + row * codebook
                        var maxValue = -Float.infinity
                        for v in 0..<codebook { maxValue = max(maxValue, src[v]) }
                        var sum: Float = 0
                        for v in 0..<codebook {
                            let e = expf(src[v] - maxValue)
                            dst[v] = e
                            sum += e
                        }
                        // torch multiplies by the reciprocal of the sum (vectorised softmax over the last dimension).
                        let inverse = 1 / sum
                        for v in 0..<codebook { dst[v] *= inverse }
                    }
                }
            }
        }
        let unknown = sample.map { $0 == maskTokenId }
        // RNG use 1: multinomial over every position, row-major.
        let drawn = probs.withUnsafeBufferPointer {
            randomness.multinomial($0.baseAddress!, rows: batch * positions, columns: codebook)
        }
        var pred = sample
        for i in pred.indices where unknown[i] { pred[i] = Int64(drawn[i]) }
        if timestep == 0 { return (pred, pred) }

        let stepIndex = timesteps.firstIndex(of: timestep) ?? 0
        let maskRatio = startingMaskRatio * self.maskRatio(stepIndex: stepIndex)
        // mask_len = floor(S · mask_ratio) in float32, at most (unknown − 1), at least 1.
        let base = (Float(positions) * maskRatio).rounded(.down)
        // RNG use 2: one uniform per position for the Gumbel noise.
        let u = randomness.uniform(count: batch * positions)
        let temperature = temperatures[stepIndex]
        var next = pred
        for b in 0..<batch {
            let unknownCount = (0..<positions).filter { unknown[b * positions + $0] }.count
            let maskLen = Int(max(1, min(Float(unknownCount - 1), base)))
            var confidence = [Float](repeating: 0, count: positions)
            for s in 0..<positions {
                let i = b * positions + s
                // Known tokens get finfo(float32).max as probability, so they are never re-masked.
                let p = unknown[i] ? probs[i * codebook + Int(pred[i])] : Float.greatestFiniteMagnitude
                let gumbel = -logf(max(-logf(max(u[i], 1e-20)), 1e-20))
                confidence[s] = logf(max(p, 1e-20)) + temperature * gumbel
            }
            let cut = confidence.sorted()[min(maskLen, positions - 1)]
            for s in 0..<positions where confidence[s] < cut { next[b * positions + s] = maskTokenId }
        }
        return (next, pred)
    }
}
