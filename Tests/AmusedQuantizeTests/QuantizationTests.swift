// The Swift quantizer against Fixtures/quant/reference.safetensors: int8 codes from torch.quantize_per_channel,
// float16/bfloat16 from torch's .half()/.bfloat16(), int4 groups from numpy by the documented formula. Codes and
// scales must be identical bytes; dequantized values identical floats.

import AmusedCore
import AmusedQuantize
import AmusedRead
import AmusedTestSupport
import Testing

@Suite("quantization against the reference")
struct QuantizationTests {
    let file: SafetensorsFile

    init() throws { file = try SafetensorsFile(path: FixturePaths.path("quant/reference.safetensors")) }

    func bytes(_ t: Tensor) throws -> [UInt8] { try t.withUnsafeBytes { [UInt8]($0) } }

    func quantize(_ name: String, _ scheme: QuantScheme) throws -> (QuantizedTensor, QuantizationStats) {
        let input = try file.tensor(named: name)
        let values = try input.floats()
        return try values.withUnsafeBufferPointer {
            try QuantizedTensor.quantize($0, shape: input.shape, scheme: scheme)
        }
    }

    @Test("int8 codes and scales equal torch.quantize_per_channel", arguments: ["linear", "conv", "embedding"])
    func int8(_ name: String) throws {
        let (q, error) = try quantize(name, .int8)
        #expect(try bytes(q.buffers[0]) == bytes(file.tensor(named: name + ".int8")))
        #expect(try bytes(q.buffers[1]) == bytes(file.tensor(named: name + ".int8_scales")))
        // Dequantization is q · s in float32: exactly the reference's product.
        #expect(try q.dequantized().floats() == file.tensor(named: name + ".int8_dequant").floats())
        // The reported error is measured on those values (max |dequantized − original|).
        let original = try file.tensor(named: name).floats(),
            back = try file.tensor(named: name + ".int8_dequant").floats()
        let expected = zip(original, back).map { Double(abs($0 - $1)) }.max() ?? 0
        #expect(abs(error.maxAbs - expected) <= 1e-12)
    }

    @Test("int4 groups of 32 equal the numpy formula", arguments: ["linear", "embedding"])
    func int4(_ name: String) throws {
        let (q, _) = try quantize(name, .int4(group: 32))
        #expect(try bytes(q.buffers[0]) == bytes(file.tensor(named: name + ".int4g32")))
        #expect(try bytes(q.buffers[1]) == bytes(file.tensor(named: name + ".int4g32_scales")))
        #expect(try bytes(q.buffers[2]) == bytes(file.tensor(named: name + ".int4g32_minimums")))
        #expect(try q.dequantized().floats() == file.tensor(named: name + ".int4g32_dequant").floats())
    }

    @Test("float16 and bfloat16 equal torch's rounding", arguments: ["linear", "conv", "embedding", "halfrange"])
    func halves(_ name: String) throws {
        let (h, _) = try quantize(name, .f16)
        #expect(try bytes(h.buffers[0]) == bytes(file.tensor(named: name + ".f16")))
        // Widening back (the run-time path) gives torch's float16 values exactly, infinities and subnormals included.
        let widened = try h.dequantized().floats(), reference = try file.tensor(named: name + ".f16").floats()
        #expect(widened.map(\.bitPattern) == reference.map(\.bitPattern))
        let (b, _) = try quantize(name, .bf16)
        #expect(try bytes(b.buffers[0]) == bytes(file.tensor(named: name + ".bf16")))
    }

    @Test func float16OverflowsAndUnderflowsAreCounted() throws {
        // Counted against torch's .half() of the same values: finite → ±inf, non-zero → 0, normal → subnormal.
        let (_, error) = try quantize("halfrange", .f16)
        let original = try file.tensor(named: "halfrange").floats()
        let reference = try file.tensor(named: "halfrange.f16").floats()
        let overflows = zip(original, reference).filter { $0.isFinite && $1.isInfinite }.count
        let underflows = zip(original, reference).filter { $0 != 0 && $1 == 0 }.count
        let subnormals = reference.filter { $0 != 0 && $0.isFinite && abs($0) < 0x1p-14 }.count
        #expect(overflows == 2 && error.overflows == overflows)
        #expect(underflows >= 1 && error.underflows == underflows)
        #expect(error.subnormals == subnormals)
        #expect(error.maxAbs == .infinity)
    }

    @Test func integerSchemesRefuseNonFiniteWeights() throws {
        let values: [Float] = [1, .nan, 2, 3]
        #expect(throws: TensorError.self) {
            _ = try values.withUnsafeBufferPointer { try QuantizedTensor.quantize($0, shape: [2, 2], scheme: .int8) }
        }
    }

    /// int4 computes through the int8 kernel: its weight re-expressed as int8 is int8's rule (the torch-checked one
    /// above) applied to numpy's dequantized int4 values, and each row moves by at most half its int8 step.
    @Test("int4 re-expressed as int8", arguments: ["linear", "embedding"])
    func int4AsInt8(_ name: String) throws {
        let (q, _) = try quantize(name, .int4(group: 32))
        let twin = try #require(q.int4AsInt8())
        let exact = try file.tensor(named: name + ".int4g32_dequant")
        let values = try exact.floats()
        let (want, _) = try values.withUnsafeBufferPointer {
            try QuantizedTensor.quantize($0, shape: exact.shape, scheme: .int8)
        }
        #expect(twin.scheme == .int8 && twin.shape == q.shape)
        #expect(try bytes(twin.buffers[0]) == bytes(want.buffers[0]))
        #expect(try bytes(twin.buffers[1]) == bytes(want.buffers[1]))
        // The bound, and a gate: the same rows one row out of step break it.
        let back = try twin.dequantized().floats()
        func within(_ shift: Int) -> Bool {
            (0..<q.rows).allSatisfy { r in
                let row = values[(r * q.columns)..<((r + 1) * q.columns)]
                let other = ((r + shift) % q.rows) * q.columns
                let bound = (row.map(abs).max() ?? 0) / 254 * (1 + 1e-6)
                return row.indices.allSatisfy { abs(back[other + $0 - r * q.columns] - row[$0]) <= bound }
            }
        }
        #expect(within(0))
        #expect(!within(1))
        let (int8, _) = try quantize(name, .int8)
        #expect(int8.int4AsInt8() == nil)
    }

    @Test func rowsDequantizeIndependently() throws {
        // A layer widens a band of output channels at a time: any band equals the same rows of the whole.
        let (q, _) = try quantize("linear", .int4(group: 32))
        let whole = try q.dequantized().floats()
        var band = [Float](repeating: 0, count: 5 * q.columns)
        band.withUnsafeMutableBufferPointer { q.dequantizeRows(7..<12, into: $0.baseAddress!) }
        #expect(band == Array(whole[(7 * q.columns)..<(12 * q.columns)]))
    }
}
