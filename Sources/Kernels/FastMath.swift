// Vectorised exp and erf for the activation and softmax passes, which would otherwise spend more time in libm
// than the matrix products spend on the same data. Accuracy: exp within 2 ulp over the float range used here;
// erf within 1.5e-7 absolute (Abramowitz & Stegun 7.1.26), far inside the 1e-4 parity tolerances.
//
// Swift compiles this module for the baseline x86-64 (SSE2: 4 lanes, no FMA), so on CPUs with AVX-512 or AVX2 `apply`
// hands the loop to its C twin (elementwise.c: the same operations lane by lane, 16 lanes, bit-identical results; a
// NaN stays a NaN).

import CGemm

/// SIMD math helpers.
public enum FastMath {
    /// Lanes per vector.
    public typealias V = SIMD8<Float>

    /// e^x, lane-wise (inputs below −87.3 give 0, above 88.7 give +inf).
    @inline(__always)
    public static func exp(_ x: V) -> V {
        // Out-of-range lanes compute garbage below and are replaced at the end (cheaper than clamping first).
        let clamped = x
        // x = n·ln2 + r, |r| ≤ ln2/2; ln2 split in two parts so r is exact.
        // Round to the nearest integer with the 1.5·2^23 trick: the sum's low mantissa bits are n itself.
        let shifted = clamped * 1.4426950408889634 + 12582912.0
        let n = shifted - 12582912.0
        var r = clamped - n * 0.693145751953125
        r = r - n * 1.428606765330187e-06
        // Degree-6 polynomial for e^r on [−ln2/2, ln2/2].
        var p = V(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // Scale by 2^n through the exponent bits.
        let nBits = unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((nBits &+ 127) &<< 23, to: V.self)
        var result = p * scale
        result.replace(with: V(repeating: .infinity), where: x .> 88.7)
        result.replace(with: V(repeating: 0), where: x .< -87.3)
        return result
    }

    /// erf(x), lane-wise.
    @inline(__always)
    public static func erf(_ x: V) -> V {
        let a = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.3275911 * a)
        var p = V(repeating: 1.061405429)
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        p = p * t
        let y = 1 - p * exp(-(a * a))
        var result = y
        result.replace(with: -y, where: x .< 0)
        return result
    }

    /// Exact-erf GELU, lane-wise: 0.5·x·(1 + erf(x/√2)).
    @inline(__always)
    public static func gelu(_ x: V) -> V { 0.5 * x * (1 + erf(x * 0.70710678118654752)) }

    /// The derivative of exact GELU, lane-wise: Φ(x) + x·φ(x) = 0.5·(1 + erf(x/√2)) + x·e^(−x²/2)/√(2π).
    @inline(__always)
    public static func geluDerivative(_ x: V) -> V {
        0.5 * (1 + erf(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) * 0.3989422804014327
    }

    /// The element-wise functions the kernels apply.
    public enum Function: Sendable {
        /// Exact GELU.
        case gelu
        /// x·sigmoid(x).
        case silu
        /// x·sigmoid(1.702x).
        case quickGelu
        /// e^(x − shift).
        case expShifted(Float)
    }

    @inline(__always)
    static func evaluate(_ f: Function, _ v: V) -> V {
        switch f {
        case .gelu: return gelu(v)
        case .silu: return v / (1 + exp(-v))
        case .quickGelu: return v / (1 + exp(-1.702 * v))
        case .expShifted(let m): return exp(v - V(repeating: m))
        }
    }

    /// Whether `apply` and the softmax run their C twins (this CPU has AVX-512F or AVX2): bit-identical results, four
    /// or two times the lanes of the baseline build.
    public static let vectorized = amused_elementwise_cpu_supported() == 1

    /// Applies `f` to `count` floats at `p` in place: sixteen lanes at a time in C where the CPU has AVX-512 or AVX2,
    /// otherwise `applyPortable`; the results are the same bits.
    public static func apply(_ p: UnsafeMutablePointer<Float>, _ count: Int, _ f: Function) {
        guard vectorized else { return applyPortable(p, count, f) }
        switch f {
        case .gelu: amused_apply(Int32(AMUSED_GELU), 0, p, count)
        case .silu: amused_apply(Int32(AMUSED_SILU), 0, p, count)
        case .quickGelu: amused_apply(Int32(AMUSED_QUICK_GELU), 0, p, count)
        case .expShifted(let m): amused_apply(Int32(AMUSED_EXP_SHIFTED), m, p, count)
        }
    }

    /// `apply` in Swift, eight lanes at a time (the tail through a padded vector): what CPUs without AVX2 run.
    public static func applyPortable(_ p: UnsafeMutablePointer<Float>, _ count: Int, _ f: Function) {
        switch f {
        case .gelu: loop(p, count) { gelu($0) }
        case .silu: loop(p, count) { $0 / (1 + exp(-$0)) }
        case .quickGelu: loop(p, count) { $0 / (1 + exp(-1.702 * $0)) }
        case .expShifted(let m):
            let mv = V(repeating: m)
            loop(p, count) { exp($0 - mv) }
        }
    }

    @inline(__always)
    static func loop(_ p: UnsafeMutablePointer<Float>, _ count: Int, _ f: (V) -> V) {
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
            UnsafeMutableRawPointer(p + i).storeBytes(of: f(v), as: V.self)
            i += 8
        }
        if i < count {
            var tail = V(repeating: 0)
            for k in 0..<(count - i) { tail[k] = p[i + k] }
            let out = f(tail)
            for k in 0..<(count - i) { p[i + k] = out[k] }
        }
    }
}
