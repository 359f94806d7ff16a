// read → map → bind → quantize → verify → pack: a checkpoint becomes one `.amused` bundle. Everything that can be
// checked from names, shapes and configs (the import, the LoRA, the plan) is checked before the first byte is written;
// tensors then stream one at a time (quantized, hashed, appended), the complete bundle is read back to be verified,
// and only then is it renamed over the destination.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedQuantize
import AmusedRead
import Foundation

/// What a parity check of a freshly written bundle concluded.
public struct ParityOutcome: Sendable {
    /// Whether it passed.
    public let pass: Bool
    /// The report stored in the manifest (timings left out, so the bundle's bytes stay reproducible).
    public let report: JSONValue

    /// An outcome.
    public init(pass: Bool, report: JSONValue) {
        self.pass = pass
        self.report = report
    }
}

/// Thrown when `--verify` finds the quantized bundle out of tolerance; nothing was written.
public struct ParityFailure: Error, LocalizedError, Sendable {
    /// The failing report.
    public let report: JSONValue
    /// The message.
    public var errorDescription: String? {
        "the converted bundle failed its parity check; nothing was written. Choose a higher precision "
            + "(--quantize int8 or fp16, or a policy keeping more tensors in float16) or a looser --profile"
    }
}

/// What a conversion wrote.
public struct ConversionResult: Sendable {
    /// The bundle.
    public let path: String
    /// Its size.
    public let bytes: Int
    /// The float32 bytes of the same tensors.
    public let float32Bytes: Int
    /// The plan that was applied.
    public let plan: QuantPlan
    /// The parity outcome, when verified.
    public let parity: ParityOutcome?
    /// Summed over tensors: float16 overflows, underflows to zero, and values made subnormal.
    public let totals: QuantizationStats
}

/// Options of a conversion.
public struct ConversionOptions: Sendable {
    /// The quantization policy.
    public var policy: QuantPolicy
    /// zstd level for a compressed bundle, nil for an uncompressed (memory-mappable) one.
    public var compression: Int32? = nil
    /// A LoRA baked into the weights before quantization.
    public var lora: LoRAFusion? = nil

    /// Options with `policy`.
    public init(policy: QuantPolicy) { self.policy = policy }
}

/// Converts checkpoints to bundles and bundles to bundles.
public enum BundleConversion {
    /// The import plan (strict: every tensor mapped, every parameter present) and the quantization plan of
    /// `checkpoint`; nothing is read but names, shapes and configs.
    public static func plan(_ checkpoint: Checkpoint, options: ConversionOptions) throws
        -> (imports: [ComponentImportPlan], plan: QuantPlan)
    {
        let imports = try CheckpointImport.check(checkpoint)
        try CheckpointImport.check(options.lora, against: imports, in: checkpoint)
        let plan = try QuantPlan(
            policy: options.policy,
            components: imports.map { ($0.part.rawValue, $0.specs) })
        return (imports, plan)
    }

    /// Converts `checkpoint` into the bundle `destination`. `verify`, when given, is run on the complete bundle
    /// before it replaces the destination; a failing outcome throws `ParityFailure` and leaves the destination as it
    /// was. `log` receives one line per stage, `progress` (done, total) per tensor.
    @discardableResult
    public static func convert(
        _ checkpoint: Checkpoint, to destination: String, options: ConversionOptions,
        verify: ((AmusedBundle) throws -> ParityOutcome)? = nil,
        log: (String) -> Void = { _ in }, progress: ((Int, Int) -> Void)? = nil
    )
        throws -> ConversionResult
    {
        let (imports, plan) = try self.plan(checkpoint, options: options)
        AtomicFileWriter.removeStale(for: destination)
        log("digest: hashing the source files")
        let source = try sourceSection(checkpoint, imports)

        // Pass 1: the whole bundle, uncompressed, at a temporary path.
        let writer = try BundleWriter(destination: destination, compression: nil)
        var components: [BundleManifest.Component] = []
        var uvit: UVit2DConfig?
        var done = 0
        var totals = QuantizationStats()
        log("quantize: \(plan.tensors.count) tensors")
        for p in imports {
            if case .transformer(let u) = p.graph.config { uvit = u }
            let source = CheckpointImport.source(p, lora: options.lora)
            var tensors: [BundleManifest.Tensor] = []
            for t in plan.tensors where t.component == p.part.rawValue {
                tensors.append(try pack(t, from: source, into: writer, totals: &totals))
                done += 1
                progress?(done, plan.tensors.count)
            }
            let (config, className, _) = CheckpointImport.canonicalConfig(p, checkpoint)
            guard let config = config.objectValue else { preconditionFailure("canonical configs are objects") }
            components.append(
                BundleManifest.Component(
                    part: p.part, className: className, map: p.map, config: config, tensors: tensors))
        }
        var files: [BundleManifest.File] = []
        if let folder = CheckpointImport.tokenizerFolder(checkpoint) {
            for name in CheckpointImport.tokenizerFiles
            where FileManager.default.fileExists(atPath: folder + "/" + name) {
                let bytes = try ReadOnlyFile(path: folder + "/" + name).readAll()
                let location = try bytes.withUnsafeBytes { raw throws(BundleError) in try writer.append(raw, width: 1) }
                files.append(BundleManifest.File(name: "tokenizer/" + name, location: location))
            }
        }
        let manifest = BundleManifest(
            source: source,
            lora: try options.lora.map { l in
                BundleManifest.LoRA(
                    file: (l.lora.path as NSString).lastPathComponent,
                    sha256: try BundleFormat.sha256(file: l.lora.path).hex, scale: l.scale)
            },
            quantization: BundleManifest.Quantization(
                policy: options.policy, bytes: plan.bytes, float32Bytes: plan.float32Bytes,
                fp16Overflows: totals.overflows, underflows: totals.underflows),
            compression: .none, components: components, files: files,
            scheduler: CheckpointImport.schedulerConfig(checkpoint, transformer: uvit)?.objectValue,
            sampling: try CheckpointImport.samplingDefaults(checkpoint), parity: nil)
        try writer.finish(manifest: manifest)

        var outcome: ParityOutcome? = nil
        // The written bundle, read back once when it is verified or re-encoded.
        let written = verify != nil || options.compression != nil ? try AmusedBundle(path: writer.temporaryPath) : nil
        if let verify, let written {
            log("verify: reading the bundle back and checking parity")
            try written.verifyIntegrity()
            let o = try verify(written)
            guard o.pass else { throw ParityFailure(report: o.report) }
            // The report names the bundle by its final name, not the temporary file it was checked in.
            var report = o.report.objectValue ?? JSONObject()
            if report["model"] != nil { report.set("model", .string((destination as NSString).lastPathComponent)) }
            outcome = ParityOutcome(pass: o.pass, report: .object(report))
        }
        log("pack: writing \(destination)")
        if let written {
            // Pass 2: the verified bytes again, with the parity report in the manifest and compressed if asked.
            try transcode(
                written, to: destination, compression: options.compression, parity: outcome?.report.objectValue)
        } else {
            try writer.commit()
        }
        // The size of what was written (a stat that fails here is a failure to write, not a size of 0).
        let size: Int
        do { size = try ReadOnlyFile(path: destination).byteCount } catch {
            throw BundleError(.io, path: destination, "cannot read back what was written: \(error)")
        }
        return ConversionResult(
            path: destination, bytes: size, float32Bytes: plan.float32Bytes, plan: plan,
            parity: outcome, totals: totals)
    }

    /// Quantizes one planned tensor and appends its buffers; returns its manifest entry.
    static func pack(
        _ t: PlannedTensor, from source: any TensorSource, into writer: BundleWriter,
        totals: inout QuantizationStats
    ) throws -> BundleManifest.Tensor {
        let raw = try source.tensor(named: t.spec.key)
        let f32 = raw.dtype == .f32 && raw.isContiguous ? raw : try raw.converted(to: .f32)
        defer { raw.storage.releasePages() }
        let layout = t.scheme.buffers(for: t.spec.shape)!
        var buffers: [BundleManifest.Buffer] = []
        var error = QuantizationStats()
        if t.scheme == .f32 {
            // Float32 tensors are copied as they are (no second copy in memory).
            let location = try f32.withUnsafeBytes { raw in try writer.append(raw, width: 4) }
            buffers.append(BundleManifest.Buffer(role: "data", dtype: .f32, shape: t.spec.shape, location: location))
        } else {
            let q: QuantizedTensor
            do {
                (q, error) = try f32.withUnsafeBytes { raw in
                    try QuantizedTensor.quantize(raw.bindMemory(to: Float.self), shape: t.spec.shape, scheme: t.scheme)
                }
            } catch {
                // Found only once the values are read (a NaN, say): nothing reaches the destination.
                throw BundleError(
                    .unsupported, path: source.path, field: "\(t.component)/\(t.spec.key)",
                    "cannot store as \(t.scheme): \(error)")
            }
            for (l, buffer) in zip(layout, q.buffers) {
                let location = try buffer.withUnsafeBytes { raw in
                    try writer.append(raw, width: max(1, l.dtype.bitWidth / 8))
                }
                buffers.append(BundleManifest.Buffer(role: l.role, dtype: l.dtype, shape: l.shape, location: location))
            }
        }
        totals.overflows += error.overflows
        totals.underflows += error.underflows
        totals.subnormals += error.subnormals
        return BundleManifest.Tensor(
            component: t.component, key: t.spec.key, shape: t.spec.shape, use: t.spec.use, scheme: t.scheme,
            reason: t.reason,
            error: BundleManifest.ErrorMeasures(error), buffers: buffers)
    }

    /// Rewrites `bundle` as `destination` with every buffer re-encoded (`compression` nil: raw, memory-mappable) and
    /// `parity` stored in the manifest when given; the decoded bytes and their digests are unchanged.
    public static func transcode(
        _ bundle: AmusedBundle, to destination: String, compression: Int32?,
        parity: JSONObject? = nil
    ) throws {
        AtomicFileWriter.removeStale(for: destination)
        let writer = try BundleWriter(destination: destination, compression: compression)
        var next = 0
        // Every buffer in file order, re-encoded; its location in the new file replaces the old one.
        var m = try bundle.manifest.relocated { _ throws(BundleError) in
            let blob = bundle.blobs[next]
            next += 1
            let location = try bundle.withBytes(blob) { raw throws(BundleError) in
                try writer.append(raw, width: blob.width)
            }
            bundle.releasePages(blob)
            return location
        }
        m.compression = BundleManifest.Compression(level: compression)
        if let parity { m.parity = parity }
        try writer.finish(manifest: m)
        try writer.commit()
    }

    /// The `source` section: the checkpoint's name and layout and the SHA-256 of every file the import reads.
    static func sourceSection(_ checkpoint: Checkpoint, _ imports: [ComponentImportPlan]) throws
        -> BundleManifest.Source
    {
        var paths: [String] = []
        for p in imports {
            guard let c = checkpoint.component(p.component) else { continue }
            if let config = c.configPath { paths.append(config) }
            var w = c.weights
            if let prefixed = w as? PrefixedSource { w = prefixed.source }
            if let sharded = w as? ShardedSafetensors {
                paths.append(sharded.path)
                paths += sharded.shards.map(\.path)
            } else if let w {
                paths.append(w.path)
            }
        }
        var seen = Set<String>()
        let root = checkpoint.path.hasSuffix("/") ? checkpoint.path : checkpoint.path + "/"
        var files: [(path: String, bytes: Int, sha256: String)] = []
        for path in paths where seen.insert(path).inserted {
            let (hex, bytes) = try BundleFormat.sha256(file: path)
            let relative =
                path.hasPrefix(root) ? String(path.dropFirst(root.count)) : (path as NSString).lastPathComponent
            files.append((relative, bytes, hex))
        }
        return BundleManifest.Source(
            name: (checkpoint.path as NSString).lastPathComponent, layout: checkpoint.layout, files: files)
    }
}
