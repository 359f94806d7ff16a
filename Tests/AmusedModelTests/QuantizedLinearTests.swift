// A linear layer with an int4 weight computes through the int8 kernel where products run in int8: the weight is
// re-expressed as int8 once, at binding (QuantizedTensor.int4AsInt8, checked against its definition in the quantize
// tests), and every call is the int8 kernel on it — checked here against the kernel called directly (itself checked
// against exact integer products in the kernel tests). Where products are widened, nothing is re-expressed.

import AmusedCore
import AmusedKernels
import Testing

@testable import AmusedModel

@Suite("quantized linear layers")
struct QuantizedLinearTests {
    /// An int4 weight [n, k] in groups of 32 with random codes, scales and minimums (a fixed LCG).
    static func int4Weight(n: Int, k: Int) throws -> QuantizedTensor {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        let groups = n * k / 32
        let codes = Storage(zeroedByteCount: n * k / 2), scales = Storage(zeroedByteCount: groups * 2),
            minimums = Storage(zeroedByteCount: groups * 2)
        let c = codes.mutableBaseAddress!.assumingMemoryBound(to: UInt8.self)
        for i in 0..<(n * k / 2) { c[i] = UInt8(truncatingIfNeeded: next()) }
        let s = scales.mutableBaseAddress!.assumingMemoryBound(to: UInt16.self),
            m = minimums.mutableBaseAddress!.assumingMemoryBound(to: UInt16.self)
        for g in 0..<groups {
            s[g] = FloatBits.floatToHalf(Float(next() % 1000 + 1) / 40_000)
            m[g] = FloatBits.floatToHalf(-Float(next() % 1000) / 4000)
        }
        return try QuantizedTensor(
            scheme: .int4(group: 32), shape: [n, k],
            buffers: [
                try Tensor(dtype: .u8, shape: [n, k / 2], storage: codes),
                try Tensor(dtype: .f16, shape: [n, k / 32], storage: scales),
                try Tensor(dtype: .f16, shape: [n, k / 32], storage: minimums),
            ])
    }

    @Test func int4WeightsComputeThroughTheInt8Kernel() throws {
        let (m, n, k) = (9, 70, 96)
        let weight = try Self.int4Weight(n: n, k: k)
        let scope = ParameterScope.binding(try Weights([:], quantized: ["weight": weight]))
        let linear = try Linear(scope, in: k, out: n, bias: false)
        let x = (0..<(m * k)).map { Float(($0 * 37) % 101) / 50 - 1 }
        let y = linear(x, rows: m)
        guard Kernels.int8Compute != .widened else {
            // Widened: no re-expression, the product is float32 against the exact int4 values.
            #expect(linear.int4AsInt8 == nil)
            var want = [Float](repeating: 0, count: m * n)
            let w = try weight.dequantized().floats()
            Kernels.sgemm(
                m: m, n: n, k: k, a: x, lda: k, b: w, ldb: k, transposeB: true, c: &want, ldc: n)
            #expect(y == want)
            return
        }
        let twin = try #require(linear.int4AsInt8)
        let (values, scales) = try #require(twin.int8Storage)
        var want = [Float](repeating: 0, count: m * n)
        x.withUnsafeBufferPointer { xp in
            want.withUnsafeMutableBufferPointer { yp in
                Kernels.int8Linear(
                    m: m, n: n, k: k, x: xp.baseAddress!, weight: values, scales: scales, bias: nil,
                    y: yp.baseAddress!, ldy: n)
            }
        }
        #expect(y == want)
    }
}
