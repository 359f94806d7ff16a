// Views, strides and conversions of the tensor type.

import AmusedCore
import Testing

@Suite("tensor views")
struct TensorTests {
    /// A transposed view over a 2×3 matrix reads the transposed values; `contiguous()` lays them out row-major.
    @Test func stridedViewCopiesToRowMajor() throws {
        let base = try Tensor(floats: [0, 1, 2, 3, 4, 5], shape: [2, 3])
        let transposed = try Tensor(dtype: .f32, shape: [3, 2], storage: base.storage, strides: [1, 3])
        #expect(!transposed.isContiguous)
        #expect(try transposed.floats() == [0, 3, 1, 4, 2, 5])
        #expect(try transposed.contiguous().isContiguous)
        let row = try Tensor(dtype: .f32, shape: [3], storage: base.storage, byteOffset: 12)
        #expect(try row.floats() == [3, 4, 5])
    }

    @Test func viewsThatEscapeTheirStorageAreRefused() throws {
        let base = try Tensor(floats: [0, 1, 2, 3], shape: [4])
        #expect(throws: TensorError.self) { try Tensor(dtype: .f32, shape: [5], storage: base.storage) }
        #expect(throws: TensorError.self) { try Tensor(dtype: .f32, shape: [2], storage: base.storage, byteOffset: 12) }
        #expect(throws: TensorError.self) {
            try Tensor(dtype: .f32, shape: [2, 2], storage: base.storage, strides: [3, 1])
        }
        #expect(throws: TensorError.self) {
            try Tensor(dtype: .f32, shape: [Int.max, 2], storage: base.storage)
        }
        #expect(throws: TensorError.self) { try base.reshaped([3]) }
    }

    /// Special values survive half precision: ±0, ±inf, NaN, the largest half, subnormals, and rounding to even.
    static let halfCases: [(Float, UInt16)] = [
        (0, 0x0000), (-0.0, 0x8000), (1, 0x3C00), (65504, 0x7BFF), (65520, 0x7C00),
        (.infinity, 0x7C00), (-.infinity, 0xFC00), (0x1p-24, 0x0001), (0x1p-25, 0x0000), (0x1.8p-25, 0x0001),
        (1 + 0x1p-11, 0x3C00), (1 + 0x3p-11, 0x3C02),
    ]

    @Test(arguments: halfCases)
    func halfBits(value: Float, bits: UInt16) {
        #expect(FloatBits.floatToHalf(value) == bits)
        let nan = FloatBits.floatToHalf(.nan)
        #expect(nan & 0x7C00 == 0x7C00 && nan & 0x3FF != 0)
    }

    @Test func integerConversionSaturates() throws {
        let t = try Tensor(floats: [-300, 3.7, 300, .nan], shape: [4])
        #expect(try t.converted(to: .i8).int64s() == [-128, 3, 127, 0])
        #expect(try t.converted(to: .u8).int64s() == [0, 3, 255, 0])
        #expect(throws: TensorError.self) { try t.converted(to: .f8e4m3) }
    }
}
