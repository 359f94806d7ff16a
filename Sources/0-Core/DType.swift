// The element types a checkpoint can hold, named as safetensors names them.

/// An element type of a stored tensor. Raw values are the safetensors dtype strings.
public enum DType: String, CaseIterable, Sendable, Codable {
    /// One byte per element, 0 or 1.
    case bool = "BOOL"
    /// 4-bit float (E2M1), two elements per byte.
    case f4 = "F4"
    /// 6-bit float (E2M3), packed.
    case f6e2m3 = "F6_E2M3"
    /// 6-bit float (E3M2), packed.
    case f6e3m2 = "F6_E3M2"
    /// Unsigned 8-bit integer.
    case u8 = "U8"
    /// Signed 8-bit integer.
    case i8 = "I8"
    /// 8-bit float, 5 exponent and 2 mantissa bits (IEEE-like, with infinities).
    case f8e5m2 = "F8_E5M2"
    /// 8-bit float, 4 exponent and 3 mantissa bits (the "fn" variant: no infinities, one NaN pattern).
    case f8e4m3 = "F8_E4M3"
    /// 8-bit power-of-two scale (E8M0), as used by microscaling formats.
    case f8e8m0 = "F8_E8M0"
    /// Signed 16-bit integer.
    case i16 = "I16"
    /// Unsigned 16-bit integer.
    case u16 = "U16"
    /// IEEE half precision.
    case f16 = "F16"
    /// bfloat16: the top half of a float32.
    case bf16 = "BF16"
    /// Signed 32-bit integer.
    case i32 = "I32"
    /// Unsigned 32-bit integer.
    case u32 = "U32"
    /// IEEE single precision.
    case f32 = "F32"
    /// Complex number of two float32 values.
    case c64 = "C64"
    /// IEEE double precision.
    case f64 = "F64"
    /// Signed 64-bit integer.
    case i64 = "I64"
    /// Unsigned 64-bit integer.
    case u64 = "U64"

    /// Bits one element takes in storage.
    public var bitWidth: Int {
        switch self {
        case .f4: 4
        case .f6e2m3, .f6e3m2: 6
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0: 8
        case .i16, .u16, .f16, .bf16: 16
        case .i32, .u32, .f32: 32
        case .c64, .f64, .i64, .u64: 64
        }
    }

    /// Bytes one element takes, or nil for the packed sub-byte types.
    public var byteWidth: Int? { bitWidth % 8 == 0 ? bitWidth / 8 : nil }

    /// True for the floating-point types (the ones a checkpoint's weights use).
    public var isFloatingPoint: Bool {
        switch self {
        case .f4, .f6e2m3, .f6e3m2, .f8e5m2, .f8e4m3, .f8e8m0, .f16, .bf16, .f32, .f64, .c64: true
        default: false
        }
    }

    /// True when elements can be converted to and from `Float` one by one (everything but packed and complex types).
    public var isScalarConvertible: Bool {
        switch self {
        case .f4, .f6e2m3, .f6e3m2, .c64: false
        default: true
        }
    }

    /// The torch spelling, for messages and for the Tools scripts.
    public var torchName: String {
        switch self {
        case .bool: "torch.bool"
        case .u8: "torch.uint8"
        case .i8: "torch.int8"
        case .i16: "torch.int16"
        case .u16: "torch.uint16"
        case .i32: "torch.int32"
        case .u32: "torch.uint32"
        case .i64: "torch.int64"
        case .u64: "torch.uint64"
        case .f16: "torch.float16"
        case .bf16: "torch.bfloat16"
        case .f32: "torch.float32"
        case .f64: "torch.float64"
        case .c64: "torch.complex64"
        case .f8e5m2: "torch.float8_e5m2"
        case .f8e4m3: "torch.float8_e4m3fn"
        case .f8e8m0: "torch.float8_e8m0fnu"
        case .f4: "float4_e2m1 (packed)"
        case .f6e2m3: "float6_e2m3 (packed)"
        case .f6e3m2: "float6_e3m2 (packed)"
        }
    }
}
