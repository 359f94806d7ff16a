// bfloat16 products (Sources/C/CGemm/igemm.c, Kernels.bf16Linear) against their definition: activations rounded to
// bfloat16 (nearest even), products of bfloat16 values (exact in float32: 8-bit significands), summed. VDPBF16PS sums
// in float32 in its own order, so the kernel must be within the float32 rounding of a k-term sum of those exact
// products: |y − Σ| ≤ k · 2⁻²⁴ · Σ|products| (plus the bias's own rounding). The rounding of the rows is checked
// exactly; a kernel given the weights one row late fails the bound.

import AmusedKernels
import CGemm
import Testing

@Suite("bfloat16 products", .enabled(if: Kernels.hasBF16, "the CPU has no AVX512_BF16; bf16 weights are widened"))
struct BF16Tests {
    /// Round to nearest even, as torch's `.to(torch.bfloat16)` does (inputs here are finite).
    static func bf16(_ v: Float) -> UInt16 {
        let bits = v.bitPattern
        return UInt16((bits + 0x7fff + ((bits >> 16) & 1)) >> 16)
    }

    static func float(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    @Test(arguments: [(1, 1, 1), (8, 32, 64), (9, 33, 65), (7, 31, 63), (17, 130, 200), (64, 300, 1024)])
    func withinTheRoundingOfTheExactSum(_ shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        let x: [Float] = (0..<m * k).map { i -> Float in
            let coarse = Float((i * 37 + 11) % 101) / 50.5 - 1
            return coarse + Float(i % 3) * 1e-3
        }
        let wf: [Float] = (0..<n * k).map { i -> Float in Float((i * 29 + 7) % 97) / 97 - 0.5 }
        let w = wf.map(Self.bf16)
        let bias = (0..<n).map { Float($0 % 5) - 2 }
        func run(_ weights: [UInt16]) -> [Float] {
            var y = [Float](repeating: .nan, count: m * n)
            Kernels.bf16Linear(m: m, n: n, k: k, x: x, weight: weights, bias: bias, y: &y, ldy: n)
            return y
        }
        func violations(_ y: [Float]) -> Int {
            var bad = 0
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0, magnitude = 0.0
                    for p in 0..<k {
                        let product = Double(Self.float(Self.bf16(x[i * k + p]))) * Double(Self.float(w[j * k + p]))
                        sum += product
                        magnitude += abs(product)
                    }
                    let exact = sum + Double(bias[j])
                    let bound = Double(k + 1) * 0x1p-24 * (magnitude + abs(Double(bias[j]))) + 1e-30
                    if !(abs(Double(y[i * n + j]) - exact) <= bound) { bad += 1 }
                }
            }
            return bad
        }
        #expect(violations(run(w)) == 0)
        if n > 1 {
            // The gate: weights one row late (an off-by-one in the panel packing) break the bound almost everywhere.
            #expect(violations(run(Array(w[k...]) + Array(w[..<k]))) > m * n / 2)
        }
    }

    @Test func rowsRoundToNearestEven() {
        let k = 37
        // Ties, values just above and below ties, negatives, large and small magnitudes.
        let x = (0..<2 * k).map { i -> Float in
            let bits: UInt32 = 0x3f80_8000 + UInt32(i % 5) * 0x1_0000 + UInt32(i % 3)
            let base = Float(bitPattern: bits)
            return i % 2 == 0 ? base : -base * Float(i)
        }
        var out = [UInt16](repeating: 7, count: 2 * 38)
        amused_bf16_rows(2, k, x, k, &out, 38)
        for i in 0..<2 {
            #expect(Array(out[(i * 38)..<(i * 38 + k)]) == x[(i * k)..<((i + 1) * k)].map(Self.bf16))
            #expect(out[i * 38 + k] == 0)  // the pair's padding
        }
    }

    @Test func theEnvironmentChoosesTheComputeMode() {
        #expect(Kernels.bf16Compute(environment: "f32") == false)
        #expect(Kernels.bf16Compute(environment: nil) == true)
    }
}
