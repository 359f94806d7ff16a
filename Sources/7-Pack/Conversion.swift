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
        let sourceJSON = try sourceSection(checkpoint, imports)

        // Pass 1: the whole bundle, uncompressed, at a temporary path.
        let writer = try BundleWriter(destination: destination, compression: nil)
        var components: [JSONValue] = []
        var uvit: UVit2DConfig?
        var done = 0
        var totals = QuantizationStats()
        log("quantize: \(plan.tensors.count) tensors")
        for p in imports {
            if case .transformer(let u) = p.graph.config { uvit = u }
            let source = CheckpointImport.source(p, lora: options.lora)
            let planned = plan.tensors.filter { $0.component == p.part.rawValue }
            var tensors: [JSONValue] = []
            for t in planned {
                let entry = try pack(t, from: source, into: writer, totals: &totals)
                tensors.append(entry)
                done += 1
                progress?(done, plan.tensors.count)
            }
            let (config, className, _) = CheckpointImport.canonicalConfig(p, checkpoint)
            var c = JSONObject()
            c.insert("name", .string(p.part.rawValue))
            c.insert("class", .string(className))
            c.insert("map", .string(p.map))
            c.insert("config", config)
            c.insert("tensors", .array(tensors))
            components.append(.object(c))
        }
        var files: [JSONValue] = []
        if let folder = CheckpointImport.tokenizerFolder(checkpoint) {
            for name in CheckpointImport.tokenizerFiles
            where FileManager.default.fileExists(atPath: folder + "/" + name) {
                let bytes = try ReadOnlyFile(path: folder + "/" + name).readAll()
                let blob = try bytes.withUnsafeBytes { raw throws(BundleError) in try writer.append(raw, width: 1) }
                var f = JSONObject()
                f.insert("name", .string("tokenizer/" + name))
                for (k, v) in blob.entries { f.insert(k, v) }
                files.append(.object(f))
            }
        }
        var m = JSONObject()
        m.insert("format", .string("amused-bundle"))
        m.insert("version", .number(String(BundleFormat.version)))
        var toolkit = JSONObject()
        toolkit.insert("name", .string("AmusedKit"))
        toolkit.insert("version", .string(BundleFormat.toolkitVersion))
        m.insert("toolkit", .object(toolkit))
        m.insert("source", sourceJSON)
        m.insert(
            "lora",
            try options.lora.map { l in
                var o = JSONObject()
                o.insert("file", .string((l.lora.path as NSString).lastPathComponent))
                o.insert("sha256", .string(try BundleFormat.sha256(file: l.lora.path).hex))
                o.insert("scale", .number(String(l.scale)))
                return .object(o)
            } ?? .null)
        var q = JSONObject()
        q.insert("policy", options.policy.json)
        q.insert("bytes", .number(String(plan.bytes)))
        q.insert("float32_bytes", .number(String(plan.float32Bytes)))
        q.insert("fp16_overflows", .number(String(totals.overflows)))
        q.insert("underflows", .number(String(totals.underflows)))
        m.insert("quantization", .object(q))
        var compression = JSONObject()
        compression.insert("codec", .string("none"))
        m.insert("compression", .object(compression))
        m.insert("components", .array(components))
        m.insert("files", .array(files))
        m.insert("scheduler", CheckpointImport.schedulerConfig(checkpoint, transformer: uvit) ?? .null)
        m.insert("sampling", try CheckpointImport.samplingDefaults(checkpoint)?.json ?? .null)
        m.insert("parity", .null)
        try writer.finish(manifest: .object(m))

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
            try transcode(written, to: destination, compression: options.compression, parity: outcome?.report)
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
    ) throws -> JSONValue {
        let raw = try source.tensor(named: t.spec.key)
        let f32 = raw.dtype == .f32 && raw.isContiguous ? raw : try raw.converted(to: .f32)
        defer { raw.storage.releasePages() }
        var entry = JSONObject()
        entry.insert("key", .string(t.spec.key))
        entry.insert("shape", .array(t.spec.shape.map { .number(String($0)) }))
        entry.insert("use", .string(t.spec.use.rawValue))
        entry.insert("scheme", .string(t.scheme.description))
        entry.insert("reason", .string(t.reason))
        let layout = t.scheme.buffers(for: t.spec.shape)!
        var buffers: [JSONValue] = []
        var error = QuantizationStats()
        func describe(_ role: String, _ dtype: DType, _ shape: [Int], _ blob: JSONObject) -> JSONValue {
            var b = JSONObject()
            b.insert("role", .string(role))
            b.insert("dtype", .string(dtype.rawValue))
            b.insert("shape", .array(shape.map { .number(String($0)) }))
            for (k, v) in blob.entries { b.insert(k, v) }
            return .object(b)
        }
        if t.scheme == .f32 {
            // Float32 tensors are copied as they are (no second copy in memory).
            let blob = try f32.withUnsafeBytes { raw in try writer.append(raw, width: 4) }
            buffers.append(describe("data", .f32, t.spec.shape, blob))
        } else {
            let (q, e): (QuantizedTensor, QuantizationStats)
            do {
                (q, e) = try f32.withUnsafeBytes { raw in
                    try QuantizedTensor.quantize(raw.bindMemory(to: Float.self), shape: t.spec.shape, scheme: t.scheme)
                }
            } catch {
                // Found only once the values are read (a NaN, say): nothing reaches the destination.
                throw BundleError(
                    .unsupported, path: source.path, field: "\(t.component)/\(t.spec.key)",
                    "cannot store as \(t.scheme): \(error)")
            }
            error = e
            for (l, buffer) in zip(layout, q.buffers) {
                let blob = try buffer.withUnsafeBytes { raw in
                    try writer.append(raw, width: max(1, l.dtype.bitWidth / 8))
                }
                buffers.append(describe(l.role, l.dtype, l.shape, blob))
            }
        }
        totals.overflows += error.overflows
        totals.underflows += error.underflows
        totals.subnormals += error.subnormals
        var e = JSONObject()
        e.insert("max_abs", number(error.maxAbs))
        e.insert("rms", number(error.rms))
        e.insert("relative_rms", number(error.relativeRMS))
        e.insert("overflows", .number(String(error.overflows)))
        e.insert("underflows", .number(String(error.underflows)))
        e.insert("subnormals", .number(String(error.subnormals)))
        entry.insert("error", .object(e))
        entry.insert("buffers", .array(buffers))
        return .object(entry)
    }

    /// Rewrites `bundle` as `destination` with every buffer re-encoded (`compression` nil: raw, memory-mappable) and
    /// `parity` stored in the manifest when given; the decoded bytes and their digests are unchanged.
    public static func transcode(
        _ bundle: AmusedBundle, to destination: String, compression: Int32?,
        parity: JSONValue? = nil
    ) throws {
        AtomicFileWriter.removeStale(for: destination)
        let writer = try BundleWriter(destination: destination, compression: compression)
        guard var m = bundle.manifest.objectValue else { throw BundleError(.malformed, path: bundle.path, "manifest") }
        var next = 0
        /// The buffer object `j` (the manifest lists them in file order) with the fields of its copy in the new file.
        func rewrite(_ j: JSONValue) throws -> JSONValue {
            let blob = bundle.blobs[next]
            next += 1
            let fields = try bundle.withBytes(blob) { raw throws(BundleError) in
                try writer.append(raw, width: blob.width)
            }
            bundle.releasePages(blob)
            guard var o = j.objectValue else { return j }
            for (k, v) in fields.entries { o.set(k, v) }
            return .object(o)
        }
        var components: [JSONValue] = []
        for c in m["components"]?.arrayValue ?? [] {
            guard var co = c.objectValue else { continue }
            var tensors: [JSONValue] = []
            for t in c["tensors"]?.arrayValue ?? [] {
                guard var to = t.objectValue else { continue }
                to.set("buffers", .array(try (t["buffers"]?.arrayValue ?? []).map(rewrite)))
                tensors.append(.object(to))
            }
            co.set("tensors", .array(tensors))
            components.append(.object(co))
        }
        m.set("components", .array(components))
        m.set("files", .array(try (m["files"]?.arrayValue ?? []).map(rewrite)))
        var c = JSONObject()
        c.insert("codec", .string(compression == nil ? "none" : "zstd"))
        if let compression { c.insert("level", .number(String(compression))) }
        m.set("compression", .object(c))
        if let parity { m.set("parity", parity) }
        try writer.finish(manifest: .object(m))
        try writer.commit()
    }

    /// The `source` section: the checkpoint's name and layout and the SHA-256 of every file the import reads.
    static func sourceSection(_ checkpoint: Checkpoint, _ imports: [ComponentImportPlan]) throws -> JSONValue {
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
        var files: [JSONValue] = []
        for path in paths where seen.insert(path).inserted {
            let (hex, bytes) = try BundleFormat.sha256(file: path)
            var f = JSONObject()
            f.insert(
                "path",
                .string(
                    path.hasPrefix(root) ? String(path.dropFirst(root.count)) : (path as NSString).lastPathComponent))
            f.insert("bytes", .number(String(bytes)))
            f.insert("sha256", .string(hex))
            files.append(.object(f))
        }
        var s = JSONObject()
        s.insert("name", .string((checkpoint.path as NSString).lastPathComponent))
        s.insert("layout", .string(checkpoint.layout.rawValue))
        s.insert("files", .array(files))
        return .object(s)
    }

    /// Measurements in manifests: six significant digits.
    static func number(_ d: Double) -> JSONValue { JSONValue.numeric(d, digits: 6) }
}
