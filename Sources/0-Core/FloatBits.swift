// Bit-exact conversions between float formats, portable to every platform Swift runs on
// (Swift's Float16 is missing on macOS x86_64, so half precision is done with integer bit operations).

/// Float format conversions on bit patterns, rounding to nearest even like PyTorch's `.half()`/`.bfloat16()`.
public enum FloatBits {
    /// IEEE half → float (exact).
    @inline(__always)
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int(h >> 10) & 0x1F
        let mant = UInt32(h & 0x3FF)
        if exp == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
        if exp == 0 {
            if mant == 0 { return Float(bitPattern: sign) }
            // Subnormal: value = mant · 2^-24, exact in float.
            let v = Float(mant) * 0x1p-24
            return sign != 0 ? -v : v
        }
        return Float(bitPattern: sign | UInt32(exp + 112) << 23 | (mant << 13))
    }

    /// IEEE half → float (exact), without branches so that loops over arrays vectorise: the half's exponent and
    /// mantissa placed in a float and scaled by 2^112 (exact for normals and subnormals); ±inf and NaN by a select.
    @inline(__always)
    public static func halfToFloatVectorisable(_ h: UInt16) -> Float {
        let magnitude = UInt32(h & 0x7FFF)
        let scaled = Float(bitPattern: magnitude << 13) * 0x1p112
        let special = Float(bitPattern: 0x7F80_0000 | ((magnitude & 0x3FF) << 13))
        let value = magnitude >= 0x7C00 ? special : scaled
        return Float(bitPattern: value.bitPattern | (UInt32(h & 0x8000) << 16))
    }

    /// float → IEEE half, round to nearest even; overflow gives ±inf, NaN stays a quiet NaN.
    @inline(__always)
    public static func floatToHalf(_ f: Float) -> UInt16 {
        let x = f.bitPattern
        let sign = UInt16((x >> 16) & 0x8000)
        let exp = Int((x >> 23) & 0xFF)
        let mant = x & 0x7F_FFFF
        if exp == 0xFF { return sign | 0x7C00 | (mant != 0 ? 0x200 | UInt16(mant >> 13) : 0) }
        let e = exp - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            if e < -10 { return sign }  // below half the smallest subnormal: rounds to zero
            let m = mant | 0x80_0000
            let shift = UInt32(14 - e)
            var half = m >> shift
            let rem = m & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            if rem > halfway || (rem == halfway && (half & 1) == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var h = UInt32(e) << 10 | (mant >> 13)
        let rem = mant & 0x1FFF
        if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) { h += 1 }  // may carry into the exponent: correct
        return sign | UInt16(h)
    }

    /// float → bfloat16, round to nearest even; NaN stays a quiet NaN.
    @inline(__always)
    public static func floatToBFloat(_ f: Float) -> UInt16 {
        let x = f.bitPattern
        if f.isNaN { return UInt16(x >> 16) | 0x40 }
        let rounding = 0x7FFF + ((x >> 16) & 1)
        return UInt16((x &+ rounding) >> 16)
    }

    /// bfloat16 → float (exact).
    @inline(__always)
    public static func bfloatToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// float8 E4M3 ("fn": no infinities, S.1111.111 is NaN) → float.
    public static func f8e4m3ToFloat(_ b: UInt8) -> Float {
        let sign: Float = (b & 0x80) != 0 ? -1 : 1
        let exp = Int(b >> 3) & 0xF
        let mant = Float(b & 0x7)
        if exp == 0xF && (b & 0x7) == 0x7 { return .nan }
        if exp == 0 { return sign * mant * 0x1p-9 }
        return sign * (1 + mant / 8) * Float(sign: .plus, exponent: exp - 7, significand: 1)
    }

    /// float8 E5M2 (IEEE-like) → float: exactly the top byte of a half.
    public static func f8e5m2ToFloat(_ b: UInt8) -> Float { halfToFloat(UInt16(b) << 8) }

    /// float8 E8M0 (unsigned power of two, 0xFF is NaN) → float.
    public static func f8e8m0ToFloat(_ b: UInt8) -> Float {
        if b == 0xFF { return .nan }
        return Float(sign: .plus, exponent: Int(b) - 127, significand: 1)
    }
}

/// Reads and writes single elements of any scalar-convertible dtype at an element index (little-endian storage).
enum ElementCodec {
    static func decode(_ dtype: DType, _ p: UnsafeRawPointer, index i: Int) -> Double {
        switch dtype {
        case .bool: p.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0
        case .u8: Double(p.load(fromByteOffset: i, as: UInt8.self))
        case .i8: Double(p.load(fromByteOffset: i, as: Int8.self))
        case .i16: Double(p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
        case .u16: Double(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        case .i32: Double(p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
        case .u32: Double(p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
        case .i64: Double(p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
        case .u64: Double(p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
        case .f16: Double(FloatBits.halfToFloat(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        case .bf16: Double(FloatBits.bfloatToFloat(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        case .f32: Double(p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self))
        case .f64: p.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
        case .f8e4m3: Double(FloatBits.f8e4m3ToFloat(p.load(fromByteOffset: i, as: UInt8.self)))
        case .f8e5m2: Double(FloatBits.f8e5m2ToFloat(p.load(fromByteOffset: i, as: UInt8.self)))
        case .f8e8m0: Double(FloatBits.f8e8m0ToFloat(p.load(fromByteOffset: i, as: UInt8.self)))
        case .f4, .f6e2m3, .f6e3m2, .c64: .nan  // excluded by isScalarConvertible before any call
        }
    }

    /// Writes `v` as `dtype`. Integers saturate at the type's range (NaN becomes 0), like a clamped cast.
    static func encode(_ v: Double, as dtype: DType, into p: UnsafeMutableRawPointer, index i: Int) {
        func clamp<T: FixedWidthInteger>(_: T.Type) -> T {
            if v.isNaN { return 0 }
            if v <= Double(T.min) { return T.min }
            if v >= Double(T.max) { return T.max }
            return T(v.rounded(.towardZero))
        }
        switch dtype {
        case .bool: p.storeBytes(of: v != 0 ? 1 : 0, toByteOffset: i, as: UInt8.self)
        case .u8: p.storeBytes(of: clamp(UInt8.self), toByteOffset: i, as: UInt8.self)
        case .i8: p.storeBytes(of: clamp(Int8.self), toByteOffset: i, as: Int8.self)
        case .i16: p.storeBytes(of: clamp(Int16.self), toByteOffset: 2 * i, as: Int16.self)
        case .u16: p.storeBytes(of: clamp(UInt16.self), toByteOffset: 2 * i, as: UInt16.self)
        case .i32: p.storeBytes(of: clamp(Int32.self), toByteOffset: 4 * i, as: Int32.self)
        case .u32: p.storeBytes(of: clamp(UInt32.self), toByteOffset: 4 * i, as: UInt32.self)
        case .i64: p.storeBytes(of: clamp(Int64.self), toByteOffset: 8 * i, as: Int64.self)
        case .u64: p.storeBytes(of: clamp(UInt64.self), toByteOffset: 8 * i, as: UInt64.self)
        case .f16: p.storeBytes(of: FloatBits.floatToHalf(Float(v)), toByteOffset: 2 * i, as: UInt16.self)
        case .bf16: p.storeBytes(of: FloatBits.floatToBFloat(Float(v)), toByteOffset: 2 * i, as: UInt16.self)
        case .f32: p.storeBytes(of: Float(v), toByteOffset: 4 * i, as: Float.self)
        case .f64: p.storeBytes(of: v, toByteOffset: 8 * i, as: Double.self)
        case .f8e4m3, .f8e5m2, .f8e8m0, .f4, .f6e2m3, .f6e3m2, .c64: break  // targets rejected by `converted(to:)`
        }
    }
}
