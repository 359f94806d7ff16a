// The main job as library code: read → map → bind → quantize → verify → pack. `Conversion.toBundle` checks the import
// and the plan from names, shapes and configs, streams the tensors into a temporary bundle (AmusedPack), checks the
// finished bundle against a PyTorch reference record under the precision's tolerance profile (AmusedVerify) and only
// then renames it into place. The `amused convert` command is this call plus printing.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedPack
import AmusedQuantize
import AmusedRead
import AmusedVerify
import Foundation

/// How a freshly written bundle is checked against a reference record before it replaces its destination.
public struct ParityCheck: Sendable {
    /// The reference record (from `Tools/record.py`).
    public var record: ReferenceRecord
    /// The tolerance profile; nil: the one named like the conversion's quantization policy (a custom policy with no
    /// profile of its name needs one given here).
    public var profile: String?
    /// A tolerance profiles file to read instead of the shipped one.
    public var profileFile: String?
    /// The float32 model quantized metrics compare against; nil: the checkpoint being converted.
    public var baseline: String?
    /// Whether record cases that cannot run are accepted (by default they fail the check).
    public var allowSkip = false

    /// A check against `record` with the defaults above.
    public init(record: ReferenceRecord) { self.record = record }
}

/// Converting checkpoints: to a verified `.amused` bundle, or to a diffusers pipeline folder.
public enum Conversion {
    /// Converts `checkpoint` into the bundle `destination`. With `parity`, the complete bundle is verified first;
    /// `report` receives the verify report (naming `destination`, not the temporary file) whether it passes or not,
    /// and a failing check throws `ParityFailure` and leaves the destination as it was. `log` receives one line per
    /// stage, `progress` (done, total) per tensor.
    @discardableResult
    public static func toBundle(
        _ checkpoint: Checkpoint, to destination: String, options: ConversionOptions,
        parity: ParityCheck? = nil, report: (VerifyReport) throws -> Void = { _ in },
        log: (String) -> Void = { _ in }, progress: ((Int, Int) -> Void)? = nil
    )
        throws -> ConversionResult
    {
        try withoutActuallyEscaping(report) { report in
            var verifier: ((AmusedBundle) throws -> ParityOutcome)? = nil
            if let parity {
                verifier = { bundle in
                    let components = try AmusedComponents(bundle: bundle, verifyIntegrity: false)
                    var result = try verify(
                        record: parity.record, components: components, policy: options.policy.name,
                        profile: parity.profile ?? options.policy.name,
                        profileFile: parity.profileFile, baseline: parity.baseline ?? checkpoint.path)
                    result.skipsAllowed = parity.allowSkip
                    result = result.renamingModel(bundle.path, to: destination)
                    try report(result)
                    return ParityOutcome(pass: result.pass, report: result.json(includeTimings: false))
                }
            }
            return try BundleConversion.convert(
                checkpoint, to: destination, options: options, verify: verifier,
                log: log, progress: progress)
        }
    }

    /// Writes `checkpoint` as a diffusers `AmusedPipeline` folder at `destination` (which must not exist).
    @discardableResult
    public static func toDiffusersFolder(
        _ checkpoint: Checkpoint, to destination: String, allowUnmapped: Bool = false,
        allowMissing: Bool = false, lora: LoRAFusion? = nil
    ) throws -> ExportReport {
        try DiffusersExport.write(
            checkpoint, to: destination, allowUnmapped: allowUnmapped, allowMissing: allowMissing,
            lora: lora)
    }

    /// Runs `record` against bundle `components` under `profile` (default: the profile named like the bundle's
    /// `policy` when the profiles file has one, else fp32), with the float32 `baseline` model (default: the record's
    /// own) for the quantized metrics when the profile has them.
    public static func verify(
        record: ReferenceRecord, components: AmusedComponents, policy: String?,
        profile: String?, profileFile: String?, baseline: String?,
        trace: String? = nil
    ) throws -> VerifyReport {
        let name =
            profile ?? policy.flatMap { (try? ToleranceProfile.load($0, file: profileFile)) != nil ? $0 : nil }
            ?? "fp32"
        let tolerance = try ToleranceProfile.load(name, file: profileFile)
        var base: AmusedComponents? = nil
        if tolerance.optional("quantized_max_mean_kl") != nil {
            let path = baseline ?? record.modelPath
            base =
                AmusedBundle.isBundle(path)
                ? try AmusedComponents(bundle: try AmusedBundle(path: path))
                : try AmusedComponents(path: path)
        }
        return try Verifier(
            record: record, components: components, baseline: base, profile: tolerance,
            traceFolder: trace
        ).run()
    }
}
