// train_amused.py's masking, drawn from torch's CPU generator in its order, so that a seed gives the same masks as
// the Python script:
//
//     timesteps = torch.rand(batch)
//     mask_prob = torch.cos(timesteps * math.pi * 0.5).clip(min_masking_rate)
//     num_token_masked = (seq_len * mask_prob).round().clamp(min=1)
//     batch_randperm = torch.rand(batch, seq_len).argsort(dim=-1)
//     mask = batch_randperm < num_token_masked.unsqueeze(-1)
//
// Note the last line: a position j is masked when the *index* argsort puts at j is below the count — a uniformly
// random subset of exactly that size, reproduced here as written.

import AmusedModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Masked inputs and labels for a batch of token grids.
public enum Masking {
    /// For `tokens` [batch, seq]: input ids (masked positions set to `maskId`) and labels (the token at masked
    /// positions, −100 elsewhere), drawing t and the permutation from `generator` as train_amused.py does.
    public static func mask(
        _ tokens: [Int64], batch: Int, maskId: Int64, minMaskingRate: Float = 0,
        generator: inout TorchGenerator
    ) -> (inputIds: [Int64], labels: [Int64]) {
        precondition(batch > 0 && tokens.count % batch == 0, "tokens must be [batch, seq] with batch > 0")
        let seq = tokens.count / batch
        let t = generator.uniform(count: batch)
        let values = generator.uniform(count: batch * seq)
        var inputs = tokens, labels = [Int64](repeating: -100, count: tokens.count)
        for b in 0..<batch {
            // Float32 tensor ops with Python scalars: (t · π) · 0.5, cos, clip, · seq, round half to even, ≥ 1.
            let probability = max(cosf(t[b] * Float.pi * 0.5), minMaskingRate)
            let count = max(1, (Float(seq) * probability).rounded(.toNearestOrEven))
            let row = Array(values[(b * seq)..<((b + 1) * seq)])
            let order = row.indices.sorted { row[$0] < row[$1] || (row[$0] == row[$1] && $0 < $1) }
            for j in 0..<seq where Float(order[j]) < count {
                inputs[b * seq + j] = maskId
                labels[b * seq + j] = tokens[b * seq + j]
            }
        }
        return (inputs, labels)
    }
}
