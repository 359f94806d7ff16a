// The C element-wise passes (Sources/C/CGemm/elementwise.c; every build of them this CPU runs: AVX2, and AVX-512 where
// it has it) against their Swift twins (FastMath.applyPortable, Kernels.softmaxRowPortable), which other CPUs run and
// which the parity records were first checked through: the two must give the same bits on every input — ordinary
// values, both zeros, the exponential's cut-offs, denormals, infinities and NaN — at lengths that cross the 16-lane
// and 8-lane edges. The softmax is also held to its definition, computed in Double.

import AmusedKernels
import CGemm
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("element-wise passes", .enabled(if: FastMath.vectorized, "needs AVX-512F or AVX2 for the C twins"))
struct ElementwiseTests {
    static let lengths = [1, 7, 8, 9, 15, 16, 17, 33, 77, 256, 1000]

    /// Every build of the C twins this CPU can run: an AVX-512 CPU checks the AVX2 build as well.
    static let widths: [Int32] = amused_elementwise_width() == 512 ? [512, 256] : [256]

    /// `FastMath.apply` through the C build of `width`.
    static func apply(_ p: inout [Float], _ f: FastMath.Function, width: Int32) {
        let count = p.count
        let (code, shift): (Int32, Float) =
            switch f {
            case .gelu: (Int32(AMUSED_GELU), 0)
            case .silu: (Int32(AMUSED_SILU), 0)
            case .quickGelu: (Int32(AMUSED_QUICK_GELU), 0)
            case .expShifted(let m): (Int32(AMUSED_EXP_SHIFTED), m)
            }
        let status = p.withUnsafeMutableBufferPointer { amused_apply_with(width, code, shift, $0.baseAddress!, count) }
        #expect(status == 0)
    }

    /// Values over the range a forward meets, with the special ones spread through (the row index shifts them, so
    /// every special value lands in the vector body and in the tail at some length).
    static func values(_ count: Int, shift: Int = 0) -> [Float] {
        let special: [Float] = [
            0, -0.0, 88.7, 88.71, -87.3, -87.31, -88.7, 87.3, 1e-40, -1e-40, .infinity, -.infinity, .nan, -.nan,
            100, -100, 3.4e38,
        ]
        return (0..<count).map { i in
            (i + shift) % 5 == 0
                ? special[((i + shift) / 5) % special.count] : Float((i * 7919 + shift) % 2001) / 40 - 25
        }
    }

    /// Every third value ±0 (alternating), the rest small ordinary values: a row without infinities.
    static func signedZeros(_ i: Int) -> Float {
        if i % 3 != 0 { return Float(i % 11) / 4 - 2 }
        return i % 2 == 0 ? 0 : -0.0
    }

    /// Positions where the two arrays differ in their bits; a NaN must meet a NaN, but which of two NaN operands an
    /// x86 instruction passes on depends on the operand order the compiler picks, so their signs and payloads may
    /// differ.
    static func mismatches(_ a: [Float], _ b: [Float]) -> [Int] {
        a.indices.filter { a[$0].bitPattern != b[$0].bitPattern && !(a[$0].isNaN && b[$0].isNaN) }
    }

    // expShifted(0) puts the exponential's cut-offs (88.7, −87.3) themselves among the inputs.
    @Test(arguments: [
        FastMath.Function.gelu, .silu, .quickGelu, .expShifted(0), .expShifted(1.5), .expShifted(-.infinity),
    ])
    func applyIsBitIdenticalToTheSwiftLoop(_ f: FastMath.Function) {
        for count in Self.lengths {
            for shift in 0..<5 {
                var portable = Self.values(count, shift: shift), dispatched = portable
                FastMath.applyPortable(&portable, count, f)
                FastMath.apply(&dispatched, count, f)
                #expect(Self.mismatches(dispatched, portable).isEmpty, "\(f) at length \(count), shift \(shift)")
                for width in Self.widths {
                    var fast = Self.values(count, shift: shift)
                    Self.apply(&fast, f, width: width)
                    #expect(Self.mismatches(fast, portable).isEmpty, "\(f), width \(width), length \(count)")
                }
            }
        }
    }

    @Test func softmaxIsBitIdenticalToTheSwiftTwinAndMatchesItsDefinition() {
        for dim in Self.lengths {
            // Finite scores (a causal row's −inf tail included) and a row that is all −inf but one.
            var rows: [[Float]] = [
                (0..<dim).map { Float(($0 * 37 + dim) % 97) / 9 - 5 },
                (0..<dim).map { $0 < (dim + 1) / 2 ? Float($0 % 13) / 3 : -.infinity },
                (0..<dim).map { $0 == dim / 2 ? 2 : -.infinity },
            ]
            // All negative (a tail's zero padding must not enter the maximum), and ±0 without infinities.
            rows.append((0..<dim).map { Float(($0 * 37 + dim) % 97) / 9 - 25 })
            rows.append((0..<dim).map(Self.signedZeros))
            // The row's only maximum last, in the tail after the vector body at lengths like 17 and 33.
            rows.append((0..<dim).map { $0 == dim - 1 ? 3 : Float($0 % 7) / 7 - 1 })
            rows.append(Self.values(dim))  // NaN and infinities: only the bits are compared
            for (r, row) in rows.enumerated() {
                var fast = row, portable = row
                fast.withUnsafeMutableBufferPointer { amused_softmax_row($0.baseAddress!, dim) }
                Kernels.softmaxRowPortable(&portable, dim)
                #expect(Self.mismatches(fast, portable).isEmpty, "row \(r) of length \(dim)")
                for width in Self.widths {
                    var other = row
                    let status = other.withUnsafeMutableBufferPointer {
                        amused_softmax_row_with(width, $0.baseAddress!, dim)
                    }
                    #expect(status == 0)
                    #expect(Self.mismatches(other, portable).isEmpty, "row \(r) of length \(dim), width \(width)")
                }
                guard r < 6 else { continue }
                // The definition in Double; 4e-6 relative covers the exponential's 2 ulp and float32 sums of up to
                // 1000 terms (each value ≤ 1, so the sum's relative error stays below ~dim·2^-24 / 16 lanes).
                let top = row.max()!
                let e = row.map { exp(Double($0) - Double(top)) }
                let total = e.reduce(0, +)
                for i in 0..<dim {
                    let want = e[i] / total
                    #expect(abs(Double(fast[i]) - want) <= 4e-6 * max(want, 1e-30), "row \(r)[\(i)] of \(dim)")
                }
            }
        }
    }

    @Test func theBitComparisonCatchesAOneUlpDifference() {
        var fast = Self.values(77), portable = fast
        FastMath.apply(&fast, 77, .gelu)
        FastMath.applyPortable(&portable, 77, .gelu)
        let i = fast.indices.first { fast[$0].isFinite && fast[$0] != 0 }!
        fast[i] = fast[i].nextUp
        #expect(Self.mismatches(fast, portable) == [i])
    }
}
