// `amused verify MODEL --reference RECORD`: parity of the Swift graph against PyTorch reference records.

import AmusedBind
import AmusedConvert
import AmusedCore
import AmusedModel
import AmusedPack
import AmusedRead
import AmusedVerify
import ArgumentParser
import Foundation

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a checkpoint against a PyTorch reference record, case by case.",
        discussion: """
            Runs every case of the record (format: docs/reference-record.md) through the Swift graph and \
            prints, per case, pass/fail, max and mean absolute error, cosine similarity, and the first tensor out of \
            tolerance. text_encoder, transformer, vq_decode and vq_encode cases compare outputs; text_to_image, \
            image_to_image and inpaint cases replay the sampler seed for seed and report the token agreement after \
            every step, the first diverging step and position, and the final pixel difference in uint8 levels. \
            A case that cannot run (an unknown kind, a component the checkpoint lacks) is reported as skipped and \
            fails the run unless --allow-skip. Exit codes: 0 all cases pass, 3 parity failed (or a case skipped), \
            1 bad input.
            With --trace DIR, each case's named intermediate activations are written to DIR/<case>.swift.safetensors; \
            when DIR also holds DIR/<case>.torch.safetensors (from Tools/trace_reference.py) the first layer that \
            diverges is printed.
            """)

    @Argument(
        help:
            "The checkpoint to check (a pipeline or component folder) or an .amused bundle. Default: the record's own model."
    )
    var model: String?

    @Option(
        help:
            "The float32 model quantized metrics compare against (pipeline cases under a quantized profile). Default: the record's own model."
    )
    var baseline: String?

    @Option(name: .long, help: "The reference record folder (holding record.json and record.safetensors).")
    var reference: String

    @Option(
        help:
            "Tolerance profile (tolerance-profiles.json: fp32, fp16, bf16, int8, int4, mixed). Default: fp32 for checkpoints, the bundle's quantization policy for bundles."
    )
    var profile: String?

    @Option(help: "A tolerance profiles file to use instead of the shipped one.")
    var profileFile: String?

    @Option(help: "Write per-case activation traces to this folder (and compare with PyTorch traces found there).")
    var trace: String?

    @Flag(help: "Print one JSON document instead of a table.")
    var json = false

    @Flag(help: "Accept cases that cannot run (unknown kinds, components the checkpoint lacks) instead of failing.")
    var allowSkip = false

    @Option(
        help: ArgumentHelp(
            "Also write the report as JUnit XML (one testcase per record case) for CI to display.",
            valueName: "file.xml"))
    var junit: String?

    @OptionGroup var loraOptions: LoRAOptions

    @OptionGroup var layoutOptions: LayoutOptions

    @Option(help: "Read *.{variant}.safetensors files (e.g. fp16), widened to float32.")
    var variant: String?

    /// A hub id for the model is resolved in the local Hugging Face cache before anything runs.
    mutating func validate() throws { model = try model.map { try layoutOptions.resolve($0) } }

    func run() throws {
        var report: VerifyReport = try reportingErrors {
            let record = try ReferenceRecord(path: reference)
            if let model, ModelSource.isBundle(model) {
                let bundle = try AmusedBundle(path: model)
                let components = try ModelSource.components(
                    model, variant: variant, lora: loraOptions, layout: layoutOptions)
                return try Conversion.verify(
                    record: record, components: components, policy: bundle.policyName,
                    profile: profile, profileFile: profileFile, baseline: baseline,
                    trace: trace)
            } else {
                let verifier = try Verifier(
                    record: record, modelPath: model,
                    profile: try ToleranceProfile.load(profile ?? "fp32", file: profileFile),
                    traceFolder: trace, lora: try loraOptions.fusion(),
                    layout: layoutOptions.layout, configs: layoutOptions.configs, variant: variant)
                return try verifier.run()
            }
        }
        report.skipsAllowed = allowSkip
        if let junit { try writeJUnit(report, to: junit) }
        emit(json ? report.json.serialized + "\n" : report.text)
        if let trace { try printBisection(report, folder: trace) }
        if !report.pass { throw ExitCode(ExitCodes.parityFailed) }
    }

    /// For each case with both traces, the first activation whose error exceeds 1e-4 of its magnitude.
    func printBisection(_ report: VerifyReport, folder: String) throws {
        for c in report.cases where c.status != .skipped {
            let ours = "\(folder)/\(c.name).swift.safetensors", theirs = "\(folder)/\(c.name).torch.safetensors"
            guard FileManager.default.fileExists(atPath: theirs) else { continue }
            let rows = try compareTraces(swift: ours, torch: theirs)
            let first = rows.first { $0.relative > 1e-4 }
            FileHandle.standardError.write(
                Data(
                    ("trace \(c.name): \(rows.count) layers compared; "
                        + (first.map {
                            "first divergence at \($0.name) (max abs \($0.maxAbs), \($0.relative) of max |ref|)"
                        }
                            ?? "no layer diverges beyond 1e-4 relative") + "\n").utf8))
        }
    }
}

/// Writes `report` as JUnit XML to `path`, atomically; a failure to write is bad input (exit 1) naming the file.
func writeJUnit(_ report: VerifyReport, to path: String) throws {
    try reportingErrors {
        let writer = try AtomicFileWriter(destination: path)
        try writer.write(Array(report.junitXML.utf8))
        try writer.commit()
    }
}
