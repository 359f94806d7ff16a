// `amused import CHECKPOINT --out DIR`: a checkpoint of any layout (open-muse, diffusers, one component, one file with
// prefixes) through the name maps into a diffusers pipeline folder; `--dry-run` prints the import plan and checks it
// without writing.

import AmusedBind
import AmusedConvert
import AmusedRead
import ArgumentParser
import Foundation

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import a checkpoint of any layout (open-muse, diffusers, one file) as a diffusers pipeline folder.",
        discussion: """
            The names go through the shipped name maps and the configs are translated; a diffusers AmusedPipeline \
            folder is written (safetensors, dtypes kept, tokenizer copied, amused-import.json recording the ledger). \
            A single file needs every component under transformer./vqvae./text_encoder. and --configs DIR. Every \
            source tensor must be mapped or dropped by a rule and every graph parameter present with its shape; \
            --allow-unmapped / --allow-missing let those through instead, and the report lists them. --lora bakes a \
            LoRA into the output. --dry-run prints the plan and the verdict, reading no tensor data. The folder is \
            built beside the destination and renamed into place.
            """)

    @Argument(help: "The checkpoint: a folder, a hub id from the local Hugging Face cache, or one file with --configs.")
    var input: String

    @Option(help: "The folder to create (it must not exist).")
    var out: String?

    @Flag(help: "Print the import plan and check it; write nothing.")
    var dryRun = false

    @Flag(
        help: "Leave tensors no map rule consumes out of the output (listed in amused-import.json) instead of failing.")
    var allowUnmapped = false

    @Flag(
        help:
            "Write the folder even when graph parameters are missing (listed in amused-import.json; the result will not load here, and diffusers would initialise them randomly)."
    )
    var allowMissing = false

    @Option(help: "Read *.{variant}.safetensors files (e.g. fp16).")
    var variant: String?

    @OptionGroup var layoutOptions: LayoutOptions

    @OptionGroup var loraOptions: LoRAOptions

    mutating func validate() throws {
        input = try layoutOptions.resolve(input)
        guard let out else {
            if dryRun { return }
            throw ValidationError("--out is required")
        }
        guard URL(fileURLWithPath: out).standardizedFileURL != URL(fileURLWithPath: input).standardizedFileURL else {
            throw ValidationError("--out must differ from the input")
        }
    }

    func run() throws {
        try reportingErrors {
            let checkpoint = try Checkpoint(
                path: input, variant: variant, mapData: !dryRun, layout: layoutOptions.layout,
                configs: layoutOptions.configs)
            if dryRun {
                emit(Inspect.mapReport(checkpoint, try importPlan(checkpoint)))
                let plans = try CheckpointImport.check(
                    checkpoint, allowUnmapped: allowUnmapped, allowMissing: allowMissing)
                let count = plans.reduce(0) { $0 + $1.specs.count - $1.missing.count }
                emit(
                    "\ndry run: the import is complete; \(count) tensors would be written"
                        + (out.map { " to \($0)" } ?? "") + ". Nothing was written.\n")
                return
            }
            let report = try Conversion.toDiffusersFolder(
                checkpoint, to: out!, allowUnmapped: allowUnmapped,
                allowMissing: allowMissing, lora: try loraOptions.fusion())
            let total = report.written.values.reduce(0, +)
            let left = report.plans.reduce(0) { $0 + $1.unmapped.count }
            let missing = report.plans.reduce(0) { $0 + $1.missing.count }
            FileHandle.standardError.write(
                Data(
                    ("wrote a diffusers folder \(out!) (\(report.layout.rawValue) layout, "
                        + "\(total) tensors"
                        + (left > 0 ? ", \(left) unmapped tensors left out by --allow-unmapped" : "")
                        + (missing > 0
                            ? ", \(missing) graph parameters MISSING by --allow-missing: it will not load as is" : "")
                        + "; report in amused-import.json)\n").utf8))
        }
    }
}
