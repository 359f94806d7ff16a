// Importing a checkpoint of any supported layout (open-muse folders above all) into a diffusers pipeline folder:
// names through the shipped maps, configs translated onto diffusers' schemas, tensors streamed one at a time into
// safetensors (dtypes kept), tokenizer files copied, and a report of what was mapped, dropped or allowed. Everything
// is checked before the first byte is written; the folder is built beside the destination and renamed into place.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

/// What an export did, written as `amused-import.json` into the output folder.
public struct ExportReport: Sendable {
    /// The source checkpoint.
    public let source: String
    /// Its detected layout.
    public let layout: Checkpoint.Layout
    /// The import plan per component.
    public let plans: [ComponentImportPlan]
    /// Whether the user allowed unmapped tensors (they are then left out and listed here).
    public let allowedUnmapped: Bool
    /// Whether the user allowed missing parameters (the output then lacks them, listed here).
    public let allowedMissing: Bool
    /// Tensors written, per output component.
    public let written: [String: Int]
    /// The LoRA fused into the output, if any.
    public var lora: LoRAFusion? = nil

    /// The report as JSON.
    public var json: JSONValue {
        var o = JSONObject()
        o.insert("format", .string("amused-import-report"))
        o.insert("version", .number("1"))
        o.insert("source", .string(source))
        o.insert("layout", .string(layout.rawValue))
        o.insert("allow_unmapped", .bool(allowedUnmapped))
        o.insert("allow_missing", .bool(allowedMissing))
        if let lora {
            var l = JSONObject()
            l.insert("file", .string(lora.lora.path))
            l.insert("scale", .number(String(lora.scale)))
            l.insert("alpha_in_file", .bool(lora.lora.hasAlpha))
            for (component, pairs) in lora.lora.pairs.sorted(by: { $0.key < $1.key }) {
                l.insert(component + "_weights_updated", .number(String(pairs.count)))
            }
            o.insert("lora", .object(l))
        }
        o.insert(
            "components",
            .array(
                plans.map { p in
                    var c = JSONObject()
                    c.insert("component", .string(p.component))
                    c.insert("written_as", .string(DiffusersExport.folderName(p.part)))
                    c.insert("map", .string(p.map))
                    var counts = JSONObject()
                    for (k, v) in p.ledger.counts.sorted(by: { $0.key < $1.key }) {
                        counts.insert(k, .number(String(v)))
                    }
                    c.insert("ledger", .object(counts))
                    c.insert(
                        "dropped",
                        .array(
                            p.ledger.entries.filter { $0.kind == .dropped }.flatMap { e in
                                e.sources.map { JSONValue.string($0 + (e.detail.map { " (\($0))" } ?? "")) }
                            }))
                    c.insert("unmapped_left_out", .array(p.unmapped.map(JSONValue.string)))
                    c.insert("missing", .array(p.missing.map { JSONValue.string($0.key) }))
                    c.insert("tensors_written", .number(String(written[DiffusersExport.folderName(p.part)] ?? 0)))
                    return .object(c)
                }))
        return .object(o)
    }
}

/// Writes a checkpoint as a diffusers `AmusedPipeline` folder.
public enum DiffusersExport {
    /// The diffusers folder name of a part.
    public static func folderName(_ part: AmusedComponents.Part) -> String { part.rawValue }

    /// Exports `checkpoint` to a new folder `out` (which must not exist). Returns the report also written there.
    @discardableResult
    public static func write(
        _ checkpoint: Checkpoint, to out: String, allowUnmapped: Bool = false,
        allowMissing: Bool = false, lora: LoRAFusion? = nil
    ) throws -> ExportReport {
        let plans = try CheckpointImport.check(checkpoint, allowUnmapped: allowUnmapped, allowMissing: allowMissing)
        try CheckpointImport.check(lora, against: plans, in: checkpoint)
        let fm = FileManager.default
        guard !fm.fileExists(atPath: out) else {
            throw ConvertError(.output, path: out, "the output folder exists already; choose a new path")
        }
        let parent = (out as NSString).deletingLastPathComponent
        let staging =
            (parent.isEmpty ? "." : parent) + "/." + (out as NSString).lastPathComponent + ".partial-"
            + UUID().uuidString
        do {
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        } catch {
            throw ConvertError(.output, path: staging, "cannot create the output folder: \(error.localizedDescription)")
        }
        var succeeded = false
        defer { if !succeeded { try? fm.removeItem(atPath: staging) } }

        var written: [String: Int] = [:]
        var index = JSONObject()
        index.insert("_class_name", .string("AmusedPipeline"))
        index.insert("_diffusers_version", .string(CheckpointImport.diffusersVersion))
        var uvit: UVit2DConfig?
        for p in plans {
            let folder = staging + "/" + folderName(p.part)
            try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let (config, className, weightsFile) = CheckpointImport.canonicalConfig(p, checkpoint)
            if case .transformer(let u) = p.graph.config { uvit = u }
            index.insert(
                p.part.rawValue,
                .array([
                    .string(p.part == .textEncoder ? "transformers" : "diffusers"),
                    .string(className),
                ]))
            try writeText(CheckpointImport.pythonJSON(config) + "\n", to: folder + "/config.json")
            let view = CheckpointImport.source(p, lora: lora)
            try SafetensorsWriter.write(source: view, metadata: [("format", "pt")], to: folder + "/" + weightsFile)
            written[folderName(p.part)] = view.infos.count
        }
        let tokenizerFolder = CheckpointImport.tokenizerFolder(checkpoint)
        if let tokenizerFolder {
            try fm.createDirectory(atPath: staging + "/tokenizer", withIntermediateDirectories: true)
            for file in CheckpointImport.tokenizerFiles where fm.fileExists(atPath: tokenizerFolder + "/" + file) {
                try fm.copyItem(atPath: tokenizerFolder + "/" + file, toPath: staging + "/tokenizer/" + file)
            }
            index.insert("tokenizer", .array([.string("transformers"), .string("CLIPTokenizer")]))
        }
        if let s = CheckpointImport.schedulerConfig(checkpoint, transformer: uvit) {
            try fm.createDirectory(atPath: staging + "/scheduler", withIntermediateDirectories: true)
            try writeText(CheckpointImport.pythonJSON(s) + "\n", to: staging + "/scheduler/scheduler_config.json")
            index.insert("scheduler", .array([.string("diffusers"), .string("AmusedScheduler")]))
        }
        if let defaults = try CheckpointImport.samplingDefaults(checkpoint) {
            index.insert(SamplingDefaults.modelIndexKey, defaults.json)
        }
        if plans.count > 1 || tokenizerFolder != nil {
            try writeText(CheckpointImport.pythonJSON(.object(index)) + "\n", to: staging + "/model_index.json")
        }
        var report = ExportReport(
            source: checkpoint.path, layout: checkpoint.layout, plans: plans,
            allowedUnmapped: allowUnmapped, allowedMissing: allowMissing, written: written)
        report.lora = lora
        try writeText(CheckpointImport.pythonJSON(report.json) + "\n", to: staging + "/amused-import.json")
        guard rename(staging, out) == 0 else {
            throw ConvertError(.output, path: out, "cannot move the finished folder into place (errno \(errno))")
        }
        succeeded = true
        return report
    }

    static func writeText(_ text: String, to path: String) throws {
        do {
            let w = try AtomicFileWriter(destination: path)
            try w.write(Array(text.utf8))
            try w.commit()
        } catch {
            throw ConvertError(.output, path: path, "cannot write: \(error)")
        }
    }
}
