// `amused convert CHECKPOINT --out F.amused`: the main job. read → map → bind → quantize → verify → pack, through
// AmusedConvert's `Conversion.toBundle`; a bundle in is re-encoded. The older spellings `amused convert FOLDER --out
// DIR` and `amused convert FILE --format F` still work, with a note: they are `amused import` and `amused export`.

import AmusedBind
import AmusedConvert
import AmusedCore
import AmusedPack
import AmusedQuantize
import AmusedRead
import AmusedVerify
import ArgumentParser
import Foundation

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a checkpoint into a verified .amused bundle (quantized, checksummed, memory-mappable).",
        discussion: """
            read → map → bind → quantize → verify → pack. Every tensor gets a scheme from the preset or policy (the \
            plan is printed first; --dry-run prints it per tensor and writes nothing); tensors are quantized one at a \
            time into a temporary file; with --verify RECORD the finished bundle is read back and checked against the \
            PyTorch record under the precision's tolerance profile (quantized pipelines against the float32 model: \
            per-step KL, top-1, unmasked-set agreement, final tokens, PSNR) — a failure exits 3 and writes nothing, a \
            pass stores the report in the bundle; then the file is fsynced and renamed into place. Given a bundle, \
            re-encodes it (--compress or not).
            To write a diffusers folder instead: amused import. A weights file in another format: amused export.
            """)

    @Argument(
        help:
            "The checkpoint (a folder, a hub id from the local Hugging Face cache, or one file with --configs), or a bundle to re-encode."
    )
    var input: String

    @Flag(help: "Print the plan per tensor and check everything; write nothing.")
    var dryRun = false

    @Option(help: "Read *.{variant}.safetensors files (e.g. fp16), widened to float32.")
    var variant: String?

    // The older spellings of `amused export` and `amused import`, still accepted (hidden from the help).
    @Option(help: .hidden) var format: Export.Format?
    @Option(help: .hidden) var ggufType: GGUFWriteType.RawValue = "f32"
    @Flag(help: .hidden) var allowUnmapped = false
    @Flag(help: .hidden) var allowMissing = false

    @OptionGroup var layoutOptions: LayoutOptions

    @OptionGroup var loraOptions: LoRAOptions

    @Option(help: "The bundle to write (conventionally *.amused).")
    var out: String?

    @Option(
        help: ArgumentHelp(
            "The quantization preset (fp32, fp16, bf16, int8, int4, mixed; default int8).",
            valueName: "preset"))
    var quantize: String?

    @Option(help: "A quantization policy file (Schemas/quant-policy.schema.json) instead of a preset.")
    var policy: String?

    @Option(help: "The int4 group size (32, 64 or 128) for the preset or policy.")
    var int4Group: Int?

    @Option(
        help: ArgumentHelp(
            "Verify the bundle against this reference record before writing it; a failed check fails the conversion (exit 3) and writes nothing.",
            valueName: "record"))
    var verify: String?

    @Option(help: "The tolerance profile for --verify (default: the preset's).")
    var profile: String?

    @Option(help: "The float32 model quantized metrics compare against (default: the input checkpoint).")
    var baseline: String?

    @Flag(help: "With --verify, accept record cases that cannot run instead of failing.")
    var allowSkip = false

    @Option(
        help: ArgumentHelp(
            "With --verify, also write the parity report as JUnit XML for CI.",
            valueName: "file.xml"))
    var junit: String?

    @Flag(
        help:
            "Compress buffers with zstd for distribution (byte planes where they help); such a bundle is decoded into memory when loaded. Converting it again without --compress restores a memory-mappable one."
    )
    var compress = false

    @Option(help: "Zstd level for --compress.")
    var compressionLevel: Int32 = 9

    @Flag(help: "Print the plan per tensor (tensor, shape, use, scheme, products, bytes, reason) on stdout.")
    var showPlan = false

    /// The older spellings, as `convert` told them apart before `import` and `export` existed: with an output that
    /// is not a bundle and no bundle option, a checkpoint folder (or a file with --configs) was imported as a diffusers
    /// folder and a file was written in another format. With no output at all, `--dry-run` is convert's own.
    var legacy: String? {
        let bundle =
            (out?.hasSuffix(".amused") ?? false) || AmusedBundle.isBundle(input) || quantize != nil
            || policy != nil || verify != nil || compress
        if bundle { return nil }
        var dir: ObjCBool = false
        let isFolder =
            (FileManager.default.fileExists(atPath: input, isDirectory: &dir) && dir.boolValue)
            || layoutOptions.configs != nil || layoutOptions.layout == .singleFile
        if isFolder { return out != nil || allowUnmapped || allowMissing || format != nil ? "import" : nil }
        // No output and no export option: convert's own dry run (the bundle plan).
        return out != nil || format != nil ? "export" : nil
    }

    mutating func validate() throws {
        // A hub id for the input is resolved in the local Hugging Face cache before anything runs.
        input = try layoutOptions.resolve(input)
        layoutOptions.revision = nil  // resolved: the input is a path now
        switch legacy {
        case "export":
            // As the older convert said it: options of folders do not apply to one file.
            if dryRun || allowUnmapped || allowMissing || variant != nil || loraOptions.lora != nil {
                throw ValidationError(
                    "--dry-run, --allow-unmapped, --allow-missing, --variant and --lora apply to checkpoint folders")
            }
            if out == nil { throw ValidationError("--out is required") }
            return
        case "import":
            if let format, format != .safetensors {
                throw ValidationError("a checkpoint folder is written as safetensors")
            }
            return
        default: break
        }
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
    }

    func run() throws {
        switch legacy {
        case "export":
            FileHandle.standardError.write(
                Data(
                    "note: converting a weights file to another format is `amused export` now; this spelling keeps working\n"
                        .utf8))
            var command = Export()
            command.input = input
            command.out = out!  // validate() required it
            command.format = format ?? .safetensors
            command.ggufType = ggufType
            try command.validate()
            try command.run()
        case "import":
            FileHandle.standardError.write(
                Data(
                    "note: importing a checkpoint as a diffusers folder is `amused import` now; this spelling keeps working\n"
                        .utf8))
            var command = Import()
            command.input = input
            command.out = out
            command.dryRun = dryRun
            command.allowUnmapped = allowUnmapped
            command.allowMissing = allowMissing
            command.variant = variant
            command.layoutOptions = layoutOptions
            command.loraOptions = loraOptions
            try command.validate()
            try command.run()
        default:
            try convertToBundle()
        }
    }

    /// read → map → bind → quantize → verify → pack, with a stage line per stage on stderr.
    func convertToBundle() throws {
        let started = Date()
        func stage(_ line: String) {
            FileHandle.standardError.write(
                Data(String(format: "[%6.1f s] %@\n", Date().timeIntervalSince(started), line).utf8))
        }
        try reportingErrors {
            if ModelSource.isBundle(input) {
                // A bundle in: re-encoded (compressed or not), digests and everything else unchanged.
                guard quantize == nil, policy == nil, verify == nil, int4Group == nil else {
                    throw ValidationError(
                        "a bundle is only re-encoded (--compress or not); quantize the original checkpoint instead")
                }
                stage("read: \(input)")
                let bundle = try AmusedBundle(path: input)
                try bundle.verifyIntegrity()
                guard let out, !dryRun else {
                    stage("dry run: every digest of the bundle checked; nothing was written")
                    return
                }
                stage("pack: \(compress ? "compressing" : "decompressing") into \(out)")
                try BundleConversion.transcode(bundle, to: out, compression: compress ? compressionLevel : nil)
                stage("wrote \(out)")
                return
            }
            stage("read: \(input)")
            let checkpoint = try Checkpoint(
                path: input, variant: variant, mapData: !dryRun, layout: layoutOptions.layout,
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
            let result = try Conversion.toBundle(
                checkpoint, to: out!, options: options, parity: parity,
                report: { report in
                    if let junit { try writeJUnit(report, to: junit) }
                    FileHandle.standardError.write(Data(report.text.utf8))
                }, log: stage, progress: ProgressBar(unit: "tensor").update)
            if result.plan.tensors.contains(where: { $0.scheme == .f16 || $0.scheme == .bf16 }) {
                let t = result.totals
                stage(
                    "half precision: \(t.overflows) values overflowed to ±inf, \(t.underflows) non-zero values became 0, "
                        + "\(t.subnormals) became subnormal (per tensor in the manifest; computed in float32, so the VQ-GAN's "
                        + "float16 NaNs of diffusers do not occur)")
            }
            stage(
                String(
                    format: "wrote %@: %ld bytes, %.3f× the %ld float32 bytes of its tensors%@", result.path,
                    result.bytes, Double(result.bytes) / Double(max(1, result.float32Bytes)), result.float32Bytes,
                    result.parity.map { $0.pass ? "; parity passed, report stored in the bundle" : "" } ?? ""))
        }
    }
}
