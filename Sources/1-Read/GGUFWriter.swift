// Writing GGUF v3 files that gguf-py reads back identically: metadata, tensor infos with dimensions fastest-first,
// data aligned to 32 bytes; F32, F16 and Q8_0 (blocks of 32: an f16 scale max|x|/127 and 32 int8 values rounded
// half away from zero, exactly as gguf-py's quantize does).

import AmusedCore

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
    /// Writes the tensors of `source` (converted to `type`; Q8_0 needs the innermost dimension to be a multiple of
    /// 32, others fall back to F16) and string `metadata` to `path` atomically, one tensor in memory at a time.
    public static func write(
        source: any TensorSource, type: GGUFWriteType, metadata: [(String, String)] = [],
        to path: String
    ) throws {
        var header: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        func string(_ s: String) {
            u64(UInt64(s.utf8.count))
            header += Array(s.utf8)
        }
        header += Array("GGUF".utf8)
        u32(3)
        u64(UInt64(source.infos.count))
        u64(UInt64(metadata.count + 1))
        string("general.alignment")
        u32(4)  // UINT32
        u32(32)
        for (k, v) in metadata {
            string(k)
            u32(8)  // STRING
            string(v)
        }
        var plan: [(name: String, type: GGUFWriteType, bytes: Int)] = []
        var offset: UInt64 = 0
        for info in source.infos {
            guard info.name.utf8.count <= GGUFFile.maxNameBytes else {
                throw ReadError(.limitExceeded, path: path, field: info.name, "GGUF tensor names are at most 64 bytes")
            }
            let count = info.elementCount
            let chosen: GGUFWriteType = type == .q8_0 && (info.shape.last ?? 1) % 32 != 0 ? .f16 : type
            let bytes = chosen == .f32 ? 4 * count : chosen == .f16 ? 2 * count : count / 32 * 34
            string(info.name)
            let dims = info.shape.isEmpty ? [1] : info.shape
            u32(UInt32(dims.count))
            for d in dims.reversed() { u64(UInt64(d)) }
            u32(chosen.id)
            u64(offset)
            offset += UInt64((bytes + 31) / 32 * 32)
            plan.append((info.name, chosen, bytes))
        }
        header += [UInt8](repeating: 0, count: (32 - header.count % 32) % 32)
        let out = try AtomicFileWriter(destination: path)
        try out.write(header)
        for entry in plan {
            let t = try source.tensor(named: entry.name)
            let values = try t.floats()
            t.storage.releasePages()
            var blob: [UInt8] = []
            switch entry.type {
            case .f32: values.withUnsafeBytes { blob = Array($0) }
            case .f16:
                blob.reserveCapacity(values.count * 2)
                for v in values { withUnsafeBytes(of: FloatBits.floatToHalf(v).littleEndian) { blob += $0 } }
            case .q8_0: blob = quantizeQ8_0(values)
            }
            guard blob.count == entry.bytes else {
                throw ReadError(
                    .inconsistent, path: source.path, field: entry.name, "tensor differs from its description")
            }
            try out.write(blob + [UInt8](repeating: 0, count: (32 - blob.count % 32) % 32))
        }
        try out.commit()
    }

    /// Writes `tensors` as a GGUF file (see `write(source:type:metadata:to:)`).
    public static func write(
        _ tensors: [(name: String, tensor: Tensor)], type: GGUFWriteType,
        metadata: [(String, String)] = [], to path: String
    ) throws {
        try write(source: InMemoryTensors(tensors), type: type, metadata: metadata, to: path)
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

}

/// Tensors held in memory, as a `TensorSource`.
public struct InMemoryTensors: TensorSource {
    /// A name for messages.
    public let path: String
    /// Treated as safetensors (the format they would be written in).
    public var format: WeightFormat { .safetensors }
    /// The tensors' descriptions, in the given order.
    public let infos: [TensorInfo]
    private let tensors: [String: Tensor]

    /// Wraps `tensors`.
    public init(_ tensors: [(name: String, tensor: Tensor)], path: String = "<memory>") {
        self.path = path
        infos = tensors.map { TensorInfo(name: $0.name, tensor: $0.tensor, path: path) }
        self.tensors = Dictionary(tensors.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
    }

    /// The tensor called `name`.
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let t = tensors[name] else { throw ReadError(.inconsistent, path: path, field: name, "no such tensor") }
        return t
    }
}
