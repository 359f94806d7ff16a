// `amused export FILE --format safetensors|gguf --out F`: a weights file in another format, names and values
// unchanged.

import AmusedRead
import ArgumentParser
import Foundation

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a weights file in another format (safetensors or GGUF), names and values unchanged.",
        discussion: """
            Reads safetensors (single or sharded), PyTorch .bin/.pt (zip + pickle, never executed), NumPy .npz/.npy, \
            GGUF or HDF5 and writes safetensors (the same bytes Python's safetensors writes) or GGUF v3 (F32, F16 or \
            Q8_0; quantized GGUF tensors are dequantized on read). One tensor is in memory at a time; strided views \
            (from PyTorch) are written row-major. Everything is validated before the first byte is written, and the \
            output appears atomically (temporary file, fsync, rename).
            """)

    /// The output formats.
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case safetensors, gguf
    }

    @Argument(help: "The weights file (or sharded index).")
    var input: String

    @Option(help: "Output format: safetensors or gguf.")
    var format: Format = .safetensors

    @Option(help: "GGUF tensor type: f32, f16 or q8_0 (q8_0 needs rows that are multiples of 32; others use f16).")
    var ggufType: GGUFWriteType.RawValue = "f32"

    @Option(help: "The output file.")
    var out: String

    func validate() throws {
        guard GGUFWriteType(rawValue: ggufType) != nil else { throw ValidationError("--gguf-type is f32, f16 or q8_0") }
        guard URL(fileURLWithPath: out).standardizedFileURL != URL(fileURLWithPath: input).standardizedFileURL else {
            throw ValidationError("--out must differ from the input")
        }
    }

    func run() throws {
        try reportingErrors {
            let source = try openWeights(path: input)
            switch format {
            case .safetensors: try SafetensorsWriter.write(source: source, metadata: [("format", "pt")], to: out)
            case .gguf: try GGUFWriter.write(source: source, type: GGUFWriteType(rawValue: ggufType)!, to: out)
            }
            FileHandle.standardError.write(Data("wrote \(source.infos.count) tensors to \(out)\n".utf8))
        }
    }
}
