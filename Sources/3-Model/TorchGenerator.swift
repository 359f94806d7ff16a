// port of torch's CPU generator (aten/src/ATen/core/MT19937RNGEngine.h, CPUGeneratorImpl.cpp and the CPU
// uniform/exponential/multinomial kernels), torch 2.9.1 — exactly the draws docs/model-notes.md §5.6 lists, in
// the same order.

import AmusedKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A source of the random draws the aMUSEd sampler makes.
public protocol SamplerRandomness {
    /// `torch.rand` / `uniform_(0, 1)` float32 values.
    mutating func uniform(count: Int) -> [Float]
    /// `torch.multinomial(p, 1)` for each row of `rows × columns` probabilities: the sampled column per row.
    mutating func multinomial(_ probabilities: UnsafePointer<Float>, rows: Int, columns: Int) -> [Int]
}

/// torch's CPU generator, seeded like `torch.Generator("cpu").manual_seed(seed)`: 32-bit MT19937 seeded with the
/// low 32 bits; float uniforms from 24 bits of one draw; exponentials from two draws as a 53-bit double.
public struct TorchGenerator: SamplerRandomness, Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// A generator in the state `manual_seed(seed)` leaves.
    public init(seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
        index = 624
    }

    /// The whole state (624 words, then the position), to save a generator mid-stream (training checkpoints).
    public var snapshot: [UInt32] { state + [UInt32(index)] }

    /// A generator continuing from `snapshot`; nil when it is not a snapshot (625 words, position ≤ 624).
    public init?(snapshot: [UInt32]) {
        guard snapshot.count == 625, snapshot[624] <= 624 else { return nil }
        state = Array(snapshot[0..<624])
        index = Int(snapshot[624])
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var next = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { next ^= 0x9908_B0DF }
            state[i] = next
        }
        index = 0
    }

    /// The next 32-bit output.
    @inline(__always)
    public mutating func next32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// The next 64-bit output: the first draw in the high half (torch's `random64`).
    @inline(__always)
    public mutating func next64() -> UInt64 {
        let hi = UInt64(next32()), lo = UInt64(next32())
        return hi << 32 | lo
    }

    /// One float32 uniform in [0, 1): (r & 0xFFFFFF) · 2⁻²⁴.
    @inline(__always)
    public mutating func nextUniform() -> Float { Float(next32() & 0xFF_FFFF) * 0x1p-24 }

    /// One float32 Exp(1) sample: u = (r64 & (2⁵³−1)) · 2⁻⁵³ in double, −log1p(−u), rounded to float.
    @inline(__always)
    public mutating func nextExponential() -> Float {
        let u = Double(next64() & ((1 << 53) - 1)) * 0x1p-53
        return Float(-log1p(-u))
    }

    /// `count` float32 uniforms, in order.
    public mutating func uniform(count: Int) -> [Float] { (0..<count).map { _ in nextUniform() } }

    /// multinomial(p, 1) as torch's CPU kernel computes it for one sample: q ~ Exp(1) for every element (drawn row
    /// by row, in order), then the first argmax of p / q per row (float32 division). The draws are taken in order, a
    /// block of rows at a time; the exponentials and the argmax of each row then run on the cores (bit-identical).
    public mutating func multinomial(_ p: UnsafePointer<Float>, rows: Int, columns: Int) -> [Int] {
        var out = [Int](repeating: 0, count: rows)
        let block = max(1, min(rows, (1 << 19) / max(columns, 1)))
        var draws = [UInt64](repeating: 0, count: block * columns)
        var first = 0
        while first < rows {
            let count = min(block, rows - first)
            for i in 0..<(count * columns) { draws[i] = next64() }
            draws.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    let d = d.baseAddress!, o = o.baseAddress!, start = first
                    Parallel.chunks(count, cost: 40 * columns) { range in
                        for r in range {
                            let row = p + (start + r) * columns, bits = d + r * columns
                            var best = 0
                            var bestValue = -Float.infinity
                            for c in 0..<columns {
                                let u = Double(bits[c] & ((1 << 53) - 1)) * 0x1p-53
                                let v = row[c] / Float(-log1p(-u))
                                if v > bestValue || (bestValue.isNaN == false && v.isNaN) {
                                    bestValue = v
                                    best = c
                                }
                            }
                            o[start + r] = best
                        }
                    }
                }
            }
            first += count
        }
        return out
    }
}

/// A fast generator for users who do not need seed-for-seed parity with PyTorch: xoshiro256** draws, and
/// multinomial sampling by inverse CDF (one uniform per row instead of one exponential per probability).
public struct FastGenerator: SamplerRandomness, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    /// A generator seeded through SplitMix64.
    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    @inline(__always)
    mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// `count` float32 uniforms in [0, 1).
    public mutating func uniform(count: Int) -> [Float] { (0..<count).map { _ in Float(next() >> 40) * 0x1p-24 } }

    /// One category per row, drawn by inverse CDF.
    public mutating func multinomial(_ p: UnsafePointer<Float>, rows: Int, columns: Int) -> [Int] {
        (0..<rows).map { r in
            let row = p + r * columns
            var total: Float = 0
            for c in 0..<columns { total += row[c] }
            var target = Float(Double(next() >> 11) * 0x1p-53) * total
            for c in 0..<columns {
                target -= row[c]
                if target < 0 { return c }
            }
            return columns - 1
        }
    }
}
