// `amused convert FILE --format safetensors|gguf --out F`: a plain format conversion, names unchanged.
// `amused convert FOLDER --out DIR`: a checkpoint (open-muse, diffusers, one component) imported through the name maps
// into a diffusers pipeline folder; `--dry-run` prints the import plan and checks it without writing.

import AmusedBind
import AmusedRead
import AmusedTensors
import ArgumentParser
import Foundation

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a weights file between formats, or import a checkpoint folder as a diffusers folder.",
        discussion: """
            Given a checkpoint (an original open-muse folder, a diffusers pipeline or component folder, or one file \
            with every component under transformer./vqvae./text_encoder. and --configs DIR), the names go through \
            the shipped name maps and the configs are translated, and a diffusers AmusedPipeline folder is written \
            (safetensors, dtypes kept, tokenizer copied, amused-import.json recording the ledger). Every source \
            tensor must be mapped or dropped by a rule and every graph parameter present with its shape; \
            --allow-unmapped / --allow-missing let those through instead, and the report lists them. --lora bakes \
            a LoRA into the output. --dry-run prints the plan and the verdict, reading no tensor data.

            Given a file:
            Reads safetensors (single or sharded), PyTorch .bin/.pt (zip + pickle, never executed), NumPy .npz or GGUF \
            and writes safetensors (the same bytes Python's safetensors writes) or GGUF v3 (F32, F16 or Q8_0; \
            quantized GGUF tensors are dequantized on read). Everything is validated before the first byte is \
            written, and the output appears atomically (temporary file, fsync, rename).
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case safetensors, gguf
    }

    @Argument(help: "The weights file (or sharded index), or a checkpoint folder, to convert.")
    var input: String

    @Option(help: "Output format: safetensors or gguf (folders: safetensors).")
    var format: Format = .safetensors

    @Flag(help: "Folders: print the import plan and check it; write nothing.")
    var dryRun = false

    @Flag(help: "Folders: leave tensors no map rule consumes out of the output (listed in amused-import.json) instead of failing.")
    var allowUnmapped = false

    @Flag(help: "Folders: write the folder even when graph parameters are missing (listed in amused-import.json; the result will not load here, and diffusers would initialise them randomly).")
    var allowMissing = false

    @Option(help: "Folders: read *.{variant}.safetensors files (e.g. fp16).")
    var variant: String?

    @OptionGroup var layoutOptions: LayoutOptions

    @OptionGroup var loraOptions: LoRAOptions

    @Option(help: "GGUF tensor type: f32, f16 or q8_0 (q8_0 needs rows that are multiples of 32; others use f16).")
    var ggufType: GGUFWriteType.RawValue = "f32"

    @Option(help: "Output file (or folder, for a folder input).")
    var out: String?

    /// A checkpoint to import (a folder, or a single file with --configs or --layout single-file) rather than a
    /// file to convert.
    var isFolder: Bool {
        var dir: ObjCBool = false
        return (FileManager.default.fileExists(atPath: input, isDirectory: &dir) && dir.boolValue)
            || layoutOptions.configs != nil || layoutOptions.layout == .singleFile
    }

    func validate() throws {
        if isFolder && format != .safetensors { throw ValidationError("a checkpoint folder is written as safetensors") }
        if !isFolder && (dryRun || allowUnmapped || allowMissing || variant != nil || loraOptions.lora != nil) {
            throw ValidationError("--dry-run, --allow-unmapped, --allow-missing, --variant and --lora apply to checkpoint folders")
        }
        guard let out else {
            if dryRun { return }
            throw ValidationError("--out is required")
        }
        guard GGUFWriteType(rawValue: ggufType) != nil else { throw ValidationError("--gguf-type is f32, f16 or q8_0") }
        guard URL(fileURLWithPath: out).standardizedFileURL != URL(fileURLWithPath: input).standardizedFileURL else {
            throw ValidationError("--out must differ from the input")
        }
    }

    func run() throws {
        if isFolder { return try importFolder() }
        guard let out else { return }
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

    func importFolder() throws {
        do {
            let checkpoint = try Checkpoint(path: input, variant: variant, mapData: !dryRun, layout: layoutOptions.layout,
                                            configs: layoutOptions.configs, opener: isolatedOpener)
            if dryRun {
                emit(Inspect.mapReport(checkpoint, try importPlan(checkpoint)))
                let plans = try DiffusersExport.check(checkpoint, allowUnmapped: allowUnmapped, allowMissing: allowMissing)
                let count = plans.reduce(0) { $0 + $1.specs.count - $1.missing.count }
                emit("\ndry run: the import is complete; \(count) tensors would be written"
                     + (out.map { " to \($0)" } ?? "") + ". Nothing was written.\n")
                return
            }
            let report = try DiffusersExport.write(checkpoint, to: out!, allowUnmapped: allowUnmapped,
                                                   allowMissing: allowMissing, lora: try loraOptions.fusion())
            let total = report.written.values.reduce(0, +)
            let left = report.plans.reduce(0) { $0 + $1.unmapped.count }
            let missing = report.plans.reduce(0) { $0 + $1.missing.count }
            FileHandle.standardError.write(Data(("wrote a diffusers folder \(out!) (\(report.layout.rawValue) layout, "
                + "\(total) tensors" + (left > 0 ? ", \(left) unmapped tensors left out by --allow-unmapped" : "")
                + (missing > 0 ? ", \(missing) graph parameters MISSING by --allow-missing: it will not load as is" : "")
                + "; report in amused-import.json)\n").utf8))
        } catch {
            let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
            FileHandle.standardError.write(Data("error: \(message)\n".utf8))
            throw ExitCode(ExitCodes.badInput)
        }
    }
}
