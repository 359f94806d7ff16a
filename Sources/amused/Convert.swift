// `amused convert FILE --format safetensors|gguf --out F`: a plain format conversion, names unchanged.

import AmusedRead
import AmusedTensors
import ArgumentParser
import Foundation

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a weights file between formats, tensor names unchanged.",
        discussion: """
            Reads safetensors (single or sharded), PyTorch .bin/.pt (zip + pickle, never executed), NumPy .npz or GGUF \
            and writes safetensors (the same bytes Python's safetensors writes) or GGUF v3 (F32, F16 or Q8_0; \
            quantized GGUF tensors are dequantized on read). Everything is validated before the first byte is \
            written, and the output appears atomically (temporary file, fsync, rename).
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case safetensors, gguf
    }

    @Argument(help: "The weights file (or sharded index) to convert.")
    var input: String

    @Option(help: "Output format: safetensors or gguf.")
    var format: Format

    @Option(help: "GGUF tensor type: f32, f16 or q8_0 (q8_0 needs rows that are multiples of 32; others use f16).")
    var ggufType: GGUFWriteType.RawValue = "f32"

    @Option(help: "Output file.")
    var out: String

    func validate() throws {
        guard GGUFWriteType(rawValue: ggufType) != nil else { throw ValidationError("--gguf-type is f32, f16 or q8_0") }
        guard URL(fileURLWithPath: out).standardizedFileURL != URL(fileURLWithPath: input).standardizedFileURL else {
            throw ValidationError("--out must differ from the input")
        }
    }

    func run() throws {
        do {
            let source = try isolatedOpener(input, true)
            // One tensor in memory at a time; strided views (from PyTorch) are written row-major.
            switch format {
            case .safetensors: try SafetensorsWriter.write(source: source, metadata: [("format", "pt")], to: out)
            case .gguf: try GGUFWriter.write(source: source, type: GGUFWriteType(rawValue: ggufType)!, to: out)
            }
            FileHandle.standardError.write(Data("wrote \(source.infos.count) tensors to \(out)\n".utf8))
        } catch {
            let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
            FileHandle.standardError.write(Data("error: \(message)\n".utf8))
            throw ExitCode(ExitCodes.badInput)
        }
    }
}
