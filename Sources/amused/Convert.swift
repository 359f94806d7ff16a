// `amused convert FILE --format safetensors|gguf --out F`: a plain format conversion, names unchanged.
// `amused convert FOLDER --out DIR`: a checkpoint (open-muse, diffusers, one component) imported through the name maps
// into a diffusers pipeline folder; `--dry-run` prints the import plan and checks it without writing.

import AmusedBind
import AmusedConvert
import AmusedPack
import AmusedQuantize
import AmusedVerify
import AmusedRead
import AmusedCore
import ArgumentParser
import Foundation

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a checkpoint into a verified .amused bundle; or import it as a diffusers folder; or convert a weights file.",
        discussion: """
            Given --out F.amused (or --quantize, --policy, --verify, --compress): read → map → bind → quantize → \
            verify → pack. Every tensor gets a scheme from the preset or policy (the plan is printed first; \
            --dry-run prints it per tensor and writes nothing); tensors are quantized one at a time into a \
            temporary file; with --verify RECORD the finished bundle is read back and checked against the PyTorch \
            record under the precision's tolerance profile (quantized pipelines against the float32 model: per-step \
            KL, top-1, unmasked-set agreement, final tokens, PSNR) — a failure exits 3 and writes nothing, a pass \
            stores the report in the bundle; then the file is fsynced and renamed into place. Given a bundle, \
            re-encodes it (--compress or not).

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

    @Option(help: "Output file (or folder, for a folder input). A name ending in .amused makes a bundle.")
    var out: String?

    @Option(help: ArgumentHelp("Bundles: the quantization preset (fp32, fp16, bf16, int8, int4, mixed; default int8).",
                               valueName: "preset"))
    var quantize: String?

    @Option(help: "Bundles: a quantization policy file (Schemas/quant-policy.schema.json) instead of a preset.")
    var policy: String?

    @Option(help: "Bundles: the int4 group size (32, 64 or 128) for the preset or policy.")
    var int4Group: Int?

    @Option(help: ArgumentHelp("Bundles: verify the bundle against this reference record before writing it; a failed check fails the conversion (exit 3) and writes nothing.", valueName: "record"))
    var verify: String?

    @Option(help: "Bundles: the tolerance profile for --verify (default: the preset's).")
    var profile: String?

    @Option(help: "Bundles: the float32 model quantized metrics compare against (default: the input checkpoint).")
    var baseline: String?

    @Flag(help: "Bundles: with --verify, accept record cases that cannot run instead of failing.")
    var allowSkip = false

    @Option(help: ArgumentHelp("Bundles: with --verify, also write the parity report as JUnit XML for CI.",
                               valueName: "file.xml"))
    var junit: String?

    @Flag(help: "Bundles: compress buffers with zstd for distribution (byte planes where they help); such a bundle is decoded into memory when loaded. Converting it again without --compress restores a memory-mappable one.")
    var compress = false

    @Option(help: "Bundles: zstd level for --compress.")
    var compressionLevel: Int32 = 9

    @Flag(help: "Bundles: print the plan per tensor (tensor, shape, use, scheme, bytes, reason) on stdout.")
    var showPlan = false

    /// A checkpoint to import (a folder, or a single file with --configs or --layout single-file) rather than a
    /// file to convert.
    var isFolder: Bool {
        var dir: ObjCBool = false
        return (FileManager.default.fileExists(atPath: input, isDirectory: &dir) && dir.boolValue)
            || layoutOptions.configs != nil || layoutOptions.layout == .singleFile
    }

    /// A bundle is written (or the input is one): .amused output or input, or a bundle option.
    var isBundle: Bool {
        (out?.hasSuffix(".amused") ?? false) || ModelSource.isBundle(input) || quantize != nil || policy != nil
            || verify != nil || compress
    }

    mutating func validate() throws {
        // A hub id for the input is resolved in the local Hugging Face cache before anything runs.
        input = try layoutOptions.resolve(input)
        if isBundle {
            if let quantize, !QuantPolicy.presets.contains(quantize) {
                throw ValidationError("--quantize is one of \(QuantPolicy.presets.joined(separator: ", "))")
            }
            if quantize != nil && policy != nil { throw ValidationError("give --quantize or --policy, not both") }
            if let g = int4Group, ![32, 64, 128].contains(g) { throw ValidationError("--int4-group is 32, 64 or 128") }
            if out == nil && !dryRun { throw ValidationError("--out is required") }
            if let out, URL(fileURLWithPath: out).standardizedFileURL == URL(fileURLWithPath: input).standardizedFileURL {
                throw ValidationError("--out must differ from the input")
            }
            if !(1...19).contains(compressionLevel) { throw ValidationError("--compression-level is 1 to 19") }
            return
        }
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
        if isBundle { return try convertToBundle() }
        if isFolder { return try importFolder() }
        guard let out else { return }
        try reportingErrors {
            let source = try openWeights(path: input)
            // One tensor in memory at a time; strided views (from PyTorch) are written row-major.
            switch format {
            case .safetensors: try SafetensorsWriter.write(source: source, metadata: [("format", "pt")], to: out)
            case .gguf: try GGUFWriter.write(source: source, type: GGUFWriteType(rawValue: ggufType)!, to: out)
            }
            FileHandle.standardError.write(Data("wrote \(source.infos.count) tensors to \(out)\n".utf8))
        }
    }

    /// read → map → bind → quantize → verify → pack, with a stage line per stage on stderr.
    func convertToBundle() throws {
        let started = Date()
        func stage(_ line: String) {
            FileHandle.standardError.write(Data(String(format: "[%6.1f s] %@\n", Date().timeIntervalSince(started), line).utf8))
        }
        try reportingErrors {
            if ModelSource.isBundle(input) {
                // A bundle in: re-encoded (compressed or not), digests and everything else unchanged.
                guard quantize == nil, policy == nil, verify == nil, int4Group == nil else {
                    throw ValidationError("a bundle is only re-encoded (--compress or not); quantize the original checkpoint instead")
                }
                stage("read: \(input)")
                let bundle = try AmusedBundle(path: input)
                try bundle.verifyIntegrity()
                guard let out else { return }
                stage("pack: \(compress ? "compressing" : "decompressing") into \(out)")
                try BundleConversion.transcode(bundle, to: out, compression: compress ? compressionLevel : nil)
                stage("wrote \(out)")
                return
            }
            stage("read: \(input)")
            let checkpoint = try Checkpoint(path: input, variant: variant, mapData: !dryRun, layout: layoutOptions.layout,
                                            configs: layoutOptions.configs)
            var chosen = try policy.map(QuantPolicy.load) ?? QuantPolicy.preset(quantize ?? "int8")
            if let g = int4Group { chosen = try chosen.withInt4Group(g) }
            var options = ConversionOptions(policy: chosen)
            options.compression = compress ? compressionLevel : nil
            options.lora = try loraOptions.fusion()
            stage("map + bind: checking every tensor against the graph its config implies")
            let (_, plan) = try BundleConversion.plan(checkpoint, options: options)
            FileHandle.standardError.write(Data(plan.summary.utf8))
            if showPlan || dryRun { emit(plan.table) }
            if dryRun {
                stage("dry run: the plan is complete; nothing was written")
                return
            }
            var parity: ParityCheck? = nil
            if let verify {
                parity = ParityCheck(record: try ReferenceRecord(path: verify))
                parity?.profile = profile
                parity?.baseline = baseline
                parity?.allowSkip = allowSkip
            }
            let result = try Conversion.toBundle(checkpoint, to: out!, options: options, parity: parity, report: { report in
                if let junit { try writeJUnit(report, to: junit) }
                FileHandle.standardError.write(Data(report.text.utf8))
            }, log: stage, progress: ProgressBar(unit: "tensor").update)
            if result.plan.tensors.contains(where: { $0.scheme == .f16 || $0.scheme == .bf16 }) {
                let t = result.totals
                stage("half precision: \(t.overflows) values overflowed to ±inf, \(t.underflows) non-zero values became 0, "
                      + "\(t.subnormals) became subnormal (per tensor in the manifest; computed in float32, so the VQ-GAN's "
                      + "float16 NaNs of diffusers do not occur)")
            }
            stage(String(format: "wrote %@: %ld bytes, %.3f× the %ld float32 bytes of its tensors%@", result.path,
                         result.bytes, Double(result.bytes) / Double(max(1, result.float32Bytes)), result.float32Bytes,
                         result.parity.map { $0.pass ? "; parity passed, report stored in the bundle" : "" } ?? ""))
        }
    }

    func importFolder() throws {
        try reportingErrors {
            let checkpoint = try Checkpoint(path: input, variant: variant, mapData: !dryRun, layout: layoutOptions.layout,
                                            configs: layoutOptions.configs)
            if dryRun {
                emit(Inspect.mapReport(checkpoint, try importPlan(checkpoint)))
                let plans = try CheckpointImport.check(checkpoint, allowUnmapped: allowUnmapped, allowMissing: allowMissing)
                let count = plans.reduce(0) { $0 + $1.specs.count - $1.missing.count }
                emit("\ndry run: the import is complete; \(count) tensors would be written"
                     + (out.map { " to \($0)" } ?? "") + ". Nothing was written.\n")
                return
            }
            let report = try Conversion.toDiffusersFolder(checkpoint, to: out!, allowUnmapped: allowUnmapped,
                                                          allowMissing: allowMissing, lora: try loraOptions.fusion())
            let total = report.written.values.reduce(0, +)
            let left = report.plans.reduce(0) { $0 + $1.unmapped.count }
            let missing = report.plans.reduce(0) { $0 + $1.missing.count }
            FileHandle.standardError.write(Data(("wrote a diffusers folder \(out!) (\(report.layout.rawValue) layout, "
                + "\(total) tensors" + (left > 0 ? ", \(left) unmapped tensors left out by --allow-unmapped" : "")
                + (missing > 0 ? ", \(missing) graph parameters MISSING by --allow-missing: it will not load as is" : "")
                + "; report in amused-import.json)\n").utf8))
        }
    }
}
