// int8 products (Sources/C/CGemm/igemm.c, Kernels.int8Linear) against their definition: activations quantized per
// row (256 levels over [min(0, min x), max(0, max x)] with a zero point, round half to even), an exact integer dot product with the int8 weights,
// rescaled as float(dot) · row scale · column scale + bias. Integer sums are exact, so both kernels must give
// results *equal* to the definition, over shapes that cross every edge of the VNNI kernel (4×4 tiles, 64-byte steps,
// 64-column blocks, the split between threads) and of the AVX2 one (6×16 tiles, odd depths). A second test bounds the error against the float32 product by what
// rounding the activations can cost, and shows that bound catches a kernel fed the wrong scales.

import AmusedKernels
import CGemm
import Testing

@Suite("int8 products")
struct Int8Tests {
    struct Case: CustomTestStringConvertible, Sendable {
        var m: Int, n: Int, k: Int, bias = true
        var testDescription: String { "\(m)×\(n)×\(k)\(bias ? " + bias" : "")" }
    }

    static let cases: [Case] = [
        Case(m: 1, n: 1, k: 1),
        Case(m: 4, n: 4, k: 64),  // one full tile, one step
        Case(m: 5, n: 5, k: 65, bias: false),  // one past each edge
        Case(m: 3, n: 63, k: 63),  // one short of each edge
        Case(m: 17, n: 130, k: 200),  // three column blocks, ragged tiles, a masked tail
        Case(m: 9, n: 64, k: 1024, bias: false),  // the model's depth
        Case(m: 64, n: 300, k: 128),  // large enough to run on two threads
        Case(m: 12, n: 48, k: 33),  // whole 6×16 tiles of the AVX2 kernel, an odd depth (a padded pair)
    ]

    /// Deterministic values in [-1, 1) with an outlier per row, like transformer activations.
    static func activations(_ m: Int, _ k: Int) -> [Float] {
        (0..<m * k).map { i in i % k == (i / k) % max(k, 1) ? 6.5 : Float((i * 37 + 11) % 101) / 50.5 - 1 }
    }

    /// The definition: per-row symmetric quantization and exact integer sums.
    static func definition(_ t: Case, x: [Float], w: [Int8], scales: [Float], bias: [Float]?) -> [Float] {
        var y = [Float](repeating: 0, count: t.m * t.n)
        for i in 0..<t.m {
            let row = x[(i * t.k)..<((i + 1) * t.k)]
            let lo = min(0, row.min() ?? 0), hi = max(0, row.max() ?? 0)
            var s = (hi - lo) / 255
            if !(s >= 1e-30) || s == .infinity { s = 1 }
            let z = max(0, min(255, (-lo / s).rounded(.toNearestOrEven)))
            let inv = 1 / s
            let q = row.map { v -> Int in Int(max(0, min(255, (v * inv).rounded(.toNearestOrEven) + z))) - Int(z) }
            for j in 0..<t.n {
                var dot = 0
                for p in 0..<t.k { dot += q[p] * Int(w[j * t.k + p]) }
                let v = Float(Int32(dot)) * s * scales[j]
                y[i * t.n + j] = bias.map { v + $0[j] } ?? v
            }
        }
        return y
    }

    static func inputs(_ t: Case) -> (x: [Float], w: [Int8], scales: [Float], bias: [Float]?) {
        let x = activations(t.m, t.k)
        // −128…127: the pair extreme (level 255 against −128) is reached, though the bundle's scheme stops at −127.
        let w = (0..<t.n * t.k).map { Int8(truncatingIfNeeded: ($0 * 29 + 7) % 256 - 128) }
        let scales = (0..<t.n).map { Float($0 % 7 + 1) / 300 }
        let bias = t.bias ? (0..<t.n).map { Float($0 % 5) - 2 } : nil
        return (x, w, scales, bias)
    }

    static func run(_ t: Case, mode: Kernels.Int8Compute, scales override: [Float]? = nil) -> [Float] {
        let (x, w, scales, bias) = inputs(t)
        var y = [Float](repeating: .nan, count: t.m * t.n)
        let s = override ?? scales
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                s.withUnsafeBufferPointer { sp in
                    y.withUnsafeMutableBufferPointer { yp in
                        if let bias {
                            bias.withUnsafeBufferPointer { bp in
                                Kernels.int8Linear(
                                    m: t.m, n: t.n, k: t.k, x: xp.baseAddress!, weight: wp.baseAddress!,
                                    scales: sp.baseAddress!, bias: bp.baseAddress!, y: yp.baseAddress!, ldy: t.n,
                                    mode: mode)
                            }
                        } else {
                            Kernels.int8Linear(
                                m: t.m, n: t.n, k: t.k, x: xp.baseAddress!, weight: wp.baseAddress!,
                                scales: sp.baseAddress!, bias: nil, y: yp.baseAddress!, ldy: t.n, mode: mode)
                        }
                    }
                }
            }
        }
        return y
    }

    /// Every integer kernel this CPU can run: the portable one always, VNNI and AVX2 where it has them.
    static let modes: [Kernels.Int8Compute] =
        [.portable] + (Kernels.hasVNNI ? [.vnni] : []) + (Kernels.hasAVX2Int8 ? [.avx2] : [])

    @Test(arguments: cases)
    func everyIntegerKernelEqualsTheDefinition(_ t: Case) {
        let (x, w, scales, bias) = Self.inputs(t)
        let want = Self.definition(t, x: x, w: w, scales: scales, bias: bias)
        for mode in Self.modes { #expect(Self.run(t, mode: mode) == want, "\(mode)") }
    }

    /// |y − x·Wᵀ| ≤ (row step / 2) · Σ_p |W[j,p]| per element (each activation is off by at most half its step), plus
    /// float32 rounding of the sums (a relative 1e-5 of the magnitudes involved).
    @Test func theErrorAgainstFloat32IsWhatRoundingActivationsCosts() {
        let t = Case(m: 17, n: 130, k: 200)
        let (x, w, scales, bias) = Self.inputs(t)
        func violations(_ y: [Float]) -> Int {
            var bad = 0
            for i in 0..<t.m {
                let row = x[(i * t.k)..<((i + 1) * t.k)]
                let step = (max(0, row.max() ?? 0) - min(0, row.min() ?? 0)) / 255
                for j in 0..<t.n {
                    var exact: Double = Double(bias![j]), magnitude = 0.0, weightSum = 0.0
                    for p in 0..<t.k {
                        let wv = Double(w[j * t.k + p]) * Double(scales[j])
                        exact += Double(row[row.startIndex + p]) * wv
                        magnitude += abs(Double(row[row.startIndex + p]) * wv)
                        weightSum += abs(wv)
                    }
                    let bound = Double(step) / 2 * weightSum + 1e-5 * (magnitude + abs(exact))
                    if abs(Double(y[i * t.n + j]) - exact) > bound { bad += 1 }
                }
            }
            return bad
        }
        #expect(violations(Self.run(t, mode: .portable)) == 0)
        // The gate: the same kernel given each column's scale one column late (an indexing bug) breaks the bound (in
        // about a fifth of the outputs: the bound is loose where scales are close).
        let shifted = [scales.last!] + scales.dropLast()
        #expect(violations(Self.run(t, mode: .portable, scales: shifted)) > t.m * t.n / 10)
    }

    /// Every quantizer (the AVX-512 one runs where the CPU has it; the AVX2 one writes 16-bit levels) gives the
    /// definition's levels, scales and zero points, including rows with NaN, infinities, all zeros and values below
    /// the 1e-30 floor.
    /// At depths that leave the vector loops a tail (37), none (32, 40 for the 8-wide range pass) or no vector body at
    /// all (5); specials sit in the body and in the tail, and one row is built for exact ties (step 1).
    @Test(arguments: [5, 32, 37, 40])
    func everyActivationQuantizerEqualsTheDefinition(_ k: Int) {
        let rows = 7, ldq = 44
        var x = Self.activations(rows, k)
        x[3] = .nan
        x[k - 1] = .nan
        x[k + 5 % k] = .infinity
        x[2 * k - 1] = .infinity
        for p in 0..<k { x[2 * k + p] = 0 }
        for p in 0..<k { x[3 * k + p] = Float(p) * 1e-33 }
        x[4 * k + 2] = -.infinity
        x[5 * k - 1] = -.infinity
        // Range [0, 255] with −0 in it: step 1, so the halves are exact ties (round half to even).
        for p in 0..<k { x[6 * k + p] = p == 0 ? 255 : p % 4 == 1 ? -0.0 : Float(p % 9) + 0.5 }
        // Definition.
        var want: [[Int]] = [], wantScale: [Float] = [], wantZero: [Int32] = []
        for i in 0..<rows {
            let row = x[(i * k)..<((i + 1) * k)]
            let lo = min(0, row.filter { !$0.isNaN }.min() ?? 0), hi = max(0, row.filter { !$0.isNaN }.max() ?? 0)
            var s = (hi - lo) / 255
            if !(s >= 1e-30) || s == .infinity { s = 1 }
            let zr = (-lo / s).rounded(.toNearestOrEven)
            let z = zr.isNaN ? 0 : max(0, min(255, zr))
            let inv = 1 / s
            want.append(
                row.map { v in
                    let r = (v * inv).rounded(.toNearestOrEven) + z
                    return Int(r.isNaN ? z : max(0, min(255, r)))
                })
            wantScale.append(s)
            wantZero.append(Int32(z))
        }
        // Each row's levels, its zero point up to `padded`, the rest of the row's 44 untouched (7).
        func expected(padded: Int) -> [Int] {
            (0..<rows).flatMap { i in
                want[i] + [Int](repeating: Int(wantZero[i]), count: padded - k)
                    + [Int](repeating: 7, count: ldq - padded)
            }
        }
        // Bytes, padded to 4·⌈k/4⌉ (the VNNI kernel reads depth in fours).
        let want8 = expected(padded: (k + 3) / 4 * 4).map { UInt8($0) }
        for quantize in [amused_quantize_rows_u8, amused_quantize_rows_u8_portable] {
            var q = [UInt8](repeating: 7, count: rows * ldq), scale = [Float](repeating: 0, count: rows)
            var zero = [Int32](repeating: -1, count: rows)
            quantize(rows, k, x, k, &q, ldq, &scale, &zero)
            #expect(q == want8)
            #expect(scale == wantScale)
            #expect(zero == wantZero)
        }
        if Kernels.hasAVX2Int8 {
            // 16-bit levels, padded to 2·⌈k/2⌉ (an odd row's last pair).
            let want16 = expected(padded: (k + 1) / 2 * 2).map { UInt16($0) }
            var q = [UInt16](repeating: 7, count: rows * ldq), scale = [Float](repeating: 0, count: rows)
            var zero = [Int32](repeating: -1, count: rows)
            amused_quantize_rows_u16(rows, k, x, k, &q, ldq, &scale, &zero)
            #expect(q == want16)
            #expect(scale == wantScale)
            #expect(zero == wantZero)
        }
    }

    @Test func theEnvironmentChoosesTheComputeMode() {
        #expect(Kernels.int8Compute(environment: "f32") == .widened)
        let forced: Kernels.Int8Compute = Kernels.hasVNNI ? .vnni : Kernels.hasAVX2Int8 ? .avx2 : .portable
        #expect(Kernels.int8Compute(environment: "int8") == forced)
        let unset: Kernels.Int8Compute = Kernels.hasVNNI ? .vnni : Kernels.prefersAVX2Int8 ? .avx2 : .widened
        #expect(Kernels.int8Compute(environment: nil) == unset)
    }
}
