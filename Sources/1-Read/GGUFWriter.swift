// Writing GGUF v3 files that gguf-py reads back identically: metadata, tensor infos with dimensions fastest-first,
// data aligned to 32 bytes; F32, F16 and Q8_0 (blocks of 32: an f16 scale max|x|/127 and 32 int8 values rounded
// half away from zero, exactly as gguf-py's quantize does).

import AmusedTensors

/// A GGUF tensor type AmusedKit writes.
public enum GGUFWriteType: String, Sendable, CaseIterable {
    /// float32.
    case f32
    /// float16 (round to nearest even).
    case f16
    /// 8-bit blocks of 32 with an f16 scale.
    case q8_0 = "q8_0"

    var id: UInt32 {
        switch self {
        case .f32: 0
        case .f16: 1
        case .q8_0: 8
        }
    }
}

/// Writes GGUF files.
public enum GGUFWriter {
    /// The bytes of a GGUF file holding `tensors` (converted to `type`; Q8_0 needs the innermost dimension to be a
    /// multiple of 32, others fall back to F16) and string `metadata`.
    public static func encode(_ tensors: [(name: String, tensor: Tensor)], type: GGUFWriteType,
                              metadata: [(String, String)] = []) throws -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func string(_ s: String) {
            u64(UInt64(s.utf8.count))
            out += Array(s.utf8)
        }
        out += Array("GGUF".utf8)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count + 1))
        string("general.alignment")
        u32(4)  // UINT32
        u32(32)
        for (k, v) in metadata {
            string(k)
            u32(8)  // STRING
            string(v)
        }
        var blobs: [[UInt8]] = []
        var offset: UInt64 = 0
        for (name, t) in tensors {
            guard name.utf8.count <= GGUFFile.maxNameBytes else {
                throw ReadError(.limitExceeded, path: "<gguf>", field: name, "GGUF tensor names are at most 64 bytes")
            }
            let values = try t.floats()
            let innermost = t.shape.last ?? 1
            let chosen: GGUFWriteType = type == .q8_0 && innermost % 32 != 0 ? .f16 : type
            var blob: [UInt8] = []
            switch chosen {
            case .f32: values.withUnsafeBytes { blob = Array($0) }
            case .f16:
                for v in values { withUnsafeBytes(of: FloatBits.floatToHalf(v).littleEndian) { blob += $0 } }
            case .q8_0: blob = quantizeQ8_0(values)
            }
            string(name)
            let dims = t.shape.isEmpty ? [1] : t.shape
            u32(UInt32(dims.count))
            for d in dims.reversed() { u64(UInt64(d)) }
            u32(chosen.id)
            u64(offset)
            offset += UInt64((blob.count + 31) / 32 * 32)
            blobs.append(blob)
        }
        out += [UInt8](repeating: 0, count: (32 - out.count % 32) % 32)
        for blob in blobs {
            out += blob
            out += [UInt8](repeating: 0, count: (32 - blob.count % 32) % 32)
        }
        return out
    }

    /// gguf-py's Q8_0: per block d = max|x| / 127, q = round-half-away(x / d) (0 when d = 0), d stored as f16.
    static func quantizeQ8_0(_ values: [Float]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(values.count / 32 * 34)
        for b in 0..<(values.count / 32) {
            let block = values[(b * 32)..<(b * 32 + 32)]
            let d = block.map(abs).max()! / 127
            let inverse: Float = d == 0 ? 0 : 1 / d
            withUnsafeBytes(of: FloatBits.floatToHalf(d).littleEndian) { out += $0 }
            for v in block {
                // gguf-py's np_roundf: sign(x) · (floor(|x|) + floor(2 · (|x| − floor(|x|)))), in float32.
                let q = v * inverse
                let a = q.magnitude, floored = a.rounded(.down)
                let rounded = (floored + (2 * (a - floored)).rounded(.down)) * (q < 0 ? -1 : q > 0 ? 1 : 0)
                out.append(UInt8(bitPattern: Int8(max(-128, min(127, rounded)))))
            }
        }
        return out
    }

    /// Writes `tensors` to `path` atomically.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], type: GGUFWriteType,
                             metadata: [(String, String)] = [], to path: String) throws {
        let bytes = try encode(tensors, type: type, metadata: metadata)
        let writer = try AtomicFileWriter(destination: path)
        try writer.write(bytes)
        try writer.commit()
    }
}
