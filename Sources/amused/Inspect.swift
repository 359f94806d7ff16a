// `amused inspect PATH`: what a checkpoint holds, read from headers only.

import AmusedBind
import AmusedCore
import AmusedPack
import AmusedRead
import ArgumentParser
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List every tensor of a checkpoint (file, component folder or pipeline folder) without reading data.",
        discussion: """
            Detects the layout (a diffusers pipeline folder with model_index.json, one component folder with \
            config.json, a sharded index, or one weights file), validates every header strictly, and prints each \
            tensor's dtype, shape and bytes, totals per component and the config found. Tensor data is never read.
            """)

    @Argument(help: "A weights file, a *.safetensors.index.json, a component folder or a pipeline folder.")
    var path: String

    @Option(help: "Choose variant weight files, e.g. 'fp16' for *.fp16.safetensors.")
    var variant: String?

    @OptionGroup var layoutOptions: LayoutOptions

    @Flag(help: "Print one JSON document instead of tables.")
    var json = false

    @Flag(
        help:
            "Bundles: check every tensor's SHA-256 and the padding (exit 1 with an integrity error naming the tensor on any damage)."
    )
    var check = false

    @Flag(help: "Bundles: print the quantization plan per tensor (scheme, bytes, reason, quantization error).")
    var plan = false

    @Flag(
        help:
            "Print the import plan instead: the name map per component and what it renames, transforms and drops; unmapped, missing and misshapen tensors against the graph the config implies."
    )
    var map = false

    /// A hub id is resolved in the local Hugging Face cache before anything runs.
    mutating func validate() throws { path = try layoutOptions.resolve(path) }

    func run() throws {
        if ModelSource.isBundle(path) { return try inspectBundle() }
        try reportingErrors {
            let checkpoint = try Checkpoint(
                path: path, variant: variant, mapData: false, layout: layoutOptions.layout,
                configs: layoutOptions.configs)
            if map {
                let plans: [ComponentImportPlan]
                do { plans = try importPlan(checkpoint) } catch {
                    throw ReadError(
                        .inconsistent, path: path, (error as? LocalizedError)?.errorDescription ?? "\(error)")
                }
                emit(Self.mapReport(checkpoint, plans))
                if plans.contains(where: { !$0.isComplete }) { throw ExitCode(ExitCodes.badInput) }
                return
            }
            emit(json ? Self.jsonReport(checkpoint).serialized + "\n" : Self.textReport(checkpoint))
        }
    }

    /// A bundle: what it is, where it came from, how it was quantized and how it scored; `--check` verifies it.
    func inspectBundle() throws {
        do {
            let bundle = try AmusedBundle(path: path)
            if check { try bundle.verifyIntegrity() }
            if json {
                emit(bundle.manifest.json.serialized + "\n")
            } else if plan {
                var out = "tensor\tshape\tscheme\tbytes\trelative_rms\tmax_abs\treason\n"
                for c in bundle.manifest.components {
                    for t in c.tensors {
                        let bytes = t.buffers.reduce(0) { $0 + $1.location.bytes }
                        // The manifest's own spellings of the shape and the measures.
                        let entry = t.json, error = t.error.json
                        out +=
                            "\(c.part.rawValue)/\(t.key)\t\(entry["shape"]?.serialized ?? "")\t\(t.scheme)\t\(bytes)\t"
                            + "\(error["relative_rms"]?.serialized ?? "")\t\(error["max_abs"]?.serialized ?? "")\t\(t.reason)\n"
                    }
                }
                emit(out)
            } else {
                emit(
                    Self.bundleReport(bundle)
                        + (check ? "integrity: every tensor's SHA-256 and all padding verified\n" : ""))
            }
        } catch {
            let message: String = (error as any Error as? LocalizedError)?.errorDescription ?? "\(error)"
            FileHandle.standardError.write(Data(("error: " + message + "\n").utf8))
            throw ExitCode(ExitCodes.badInput)
        }
    }

    static func bundleReport(_ b: AmusedBundle) -> String {
        let m = b.manifest
        var out =
            "bundle: \(b.path) (\(b.byteCount) bytes, format version \(BundleFormat.version), "
            + "made by AmusedKit \(m.toolkitVersion))\n"
        out +=
            "source: \(m.source.name) (\(m.source.layout.rawValue) layout, \(m.source.files.count) files with SHA-256)\n"
        if let lora = m.lora { out += "lora: \(lora.file) at scale \(lora.scale) (baked in)\n" }
        let q = m.quantization
        out +=
            "quantization: policy \(q.policy.name), \(q.bytes) tensor bytes for \(q.float32Bytes) float32 bytes; "
            + "float16 overflows \(q.fp16Overflows)\n"
        out +=
            "compression: \(b.compressed ? "zstd" : "none")"
            + (b.compressed ? " (decoded into memory when loaded)\n" : " (memory-mappable)\n")
        for c in b.components {
            var schemes: [String: (Int, Int)] = [:]
            for t in c.tensors {
                let bytes = t.buffers.reduce(0) { $0 + $1.blob.bytes }
                schemes[t.scheme.description, default: (0, 0)].0 += 1
                schemes[t.scheme.description, default: (0, 0)].1 += bytes
            }
            let className: String =
                c.config["_class_name"]?.stringValue ?? c.config["architectures"]?.arrayValue?.first?.stringValue ?? "?"
            let parts: [String] = schemes.sorted { $0.key < $1.key }.map {
                "\($0.key) \($0.value.0) (\($0.value.1) bytes)"
            }
            out += "  \(c.name) (\(className)): \(c.tensors.count) tensors; " + parts.joined(separator: ", ") + "\n"
        }
        out += "files: " + b.files.keys.sorted().joined(separator: ", ") + "\n"
        if let parity = m.parity.map(JSONValue.object) {
            let cases = parity["cases"]?.arrayValue ?? []
            let passed = cases.filter { $0["status"]?.stringValue == "pass" }.count
            out +=
                "parity: \(parity["pass"] == .bool(true) ? "PASSED" : "FAILED") against \(parity["record"]?.stringValue ?? "?") "
                + "(profile \(parity["profile"]?.stringValue ?? "?"), \(passed) of \(cases.count) cases passed)\n"
            for c in cases {
                guard let q = c["quantization"] else { continue }
                out +=
                    "  \(c["name"]?.stringValue ?? ""): KL \(q["kl_mean"]?.serialized ?? ""), top-1 \(q["top1"]?.serialized ?? ""), "
                    + "final tokens \(q["final_token_agreement"]?.serialized ?? ""), PSNR \(q["psnr_db"]?.serialized ?? "") dB\n"
            }
        } else {
            out += "parity: not verified at conversion (amused convert --verify RECORD stores a report)\n"
        }
        return out
    }

    static func mapReport(_ c: Checkpoint, _ plans: [ComponentImportPlan]) -> String {
        var out = "checkpoint: \(c.path)\nlayout: \(c.layout.rawValue)\n"
        for p in plans {
            out += "\n== \(p.component): map \(p.map)\n"
            do {
                let l = p.ledger, n = l.counts
                out +=
                    "  unchanged \(n["unchanged"]!), renamed \(n["renamed"]!), transformed \(n["transformed"]!), "
                    + "dropped \(n["dropped"]!), unmapped \(n["unmapped"]!)\n"
                for e in l.entries where e.kind == .transformed || e.kind == .dropped {
                    out +=
                        "  \(e.kind.rawValue): \(e.sources.joined(separator: " + "))"
                        + (e.targets.isEmpty ? "" : " → \(e.targets.joined(separator: ", "))")
                        + (e.detail.map { " (\($0))" } ?? "") + "\n"
                }
            }
            out +=
                "  graph parameters matched: \(p.matched), missing: \(p.missing.count), unmapped tensors: "
                + "\(p.unmapped.count), shape mismatches: \(p.misshapen.count)\n"
            for m in p.missing { out += "  missing: \(m.key) \(describeShape(m.shape))\n" }
            for u in p.unmapped { out += "  unmapped: \(u)\n" }
            for m in p.misshapen {
                out +=
                    "  shape: \(m.key) is \(describeShape(m.found)), the config implies \(describeShape(m.expected))\n"
            }
        }
        return out
    }

    static func jsonReport(_ c: Checkpoint) -> JSONValue {
        var root = JSONObject()
        root.insert("path", .string(c.path))
        root.insert("layout", .string(c.layout.rawValue))
        if let index = c.modelIndex { root.insert("model_index", index) }
        var totals = (tensors: 0, parameters: 0, bytes: 0)
        var components: [JSONValue] = []
        for component in c.components {
            var o = JSONObject()
            o.insert("name", .string(component.name))
            o.insert("class", component.className.map(JSONValue.string) ?? .null)
            o.insert("config_path", component.configPath.map(JSONValue.string) ?? .null)
            o.insert("config", component.config ?? .null)
            if let w = component.weights {
                var wo = JSONObject()
                wo.insert("path", .string(w.path))
                wo.insert("format", .string(w.format.rawValue))
                wo.insert(
                    "tensors",
                    .array(
                        w.infos.map { info in
                            var t = JSONObject()
                            t.insert("name", .string(info.name))
                            t.insert("dtype", .string(info.dtype.rawValue))
                            t.insert("shape", .array(info.shape.map { .number(String($0)) }))
                            t.insert("bytes", .number(String(info.byteCount)))
                            return .object(t)
                        }))
                wo.insert("tensor_count", .number(String(w.infos.count)))
                wo.insert("parameters", .number(String(w.totalElements)))
                wo.insert("bytes", .number(String(w.totalBytes)))
                o.insert("weights", .object(wo))
                totals.tensors += w.infos.count
                totals.parameters += w.totalElements
                totals.bytes += w.totalBytes
            } else {
                o.insert("weights", .null)
            }
            o.insert("files", .array(component.files.map(JSONValue.string)))
            components.append(.object(o))
        }
        root.insert("components", .array(components))
        var t = JSONObject()
        t.insert("tensors", .number(String(totals.tensors)))
        t.insert("parameters", .number(String(totals.parameters)))
        t.insert("bytes", .number(String(totals.bytes)))
        root.insert("totals", .object(t))
        return .object(root)
    }

    static func textReport(_ c: Checkpoint) -> String {
        var out = "checkpoint: \(c.path)\nlayout: \(c.layout.rawValue)"
        if let cls = c.modelIndex?["_class_name"]?.stringValue { out += " (\(cls))" }
        out += "\n"
        var totals = (tensors: 0, parameters: 0, bytes: 0)
        for component in c.components {
            out += "\n== \(component.name)" + (component.className.map { ": \($0)" } ?? "") + "\n"
            if let path = component.configPath, let config = component.config?.objectValue {
                out += "config: \(path)\n"
                for (key, value) in config.entries where !key.hasPrefix("_") {
                    out += "  \(key) = \(value.serialized)\n"
                }
            }
            if !component.files.isEmpty { out += "files: " + component.files.joined(separator: ", ") + "\n" }
            guard let w = component.weights else { continue }
            out += "weights: \(w.path) (\(w.format.rawValue))\n"
            let nameWidth = min(max(w.infos.map(\.name.count).max() ?? 4, 4), 72)
            out += "  " + pad("name", nameWidth) + "  " + pad("dtype", 7) + "  " + pad("shape", 24) + "  bytes\n"
            for info in w.infos {
                out +=
                    "  " + pad(info.name, nameWidth) + "  " + pad(info.dtype.rawValue, 7) + "  "
                    + pad(describeShape(info.shape), 24) + "  \(grouped(info.byteCount))\n"
            }
            out +=
                "total: \(w.infos.count) tensors, \(grouped(w.totalElements)) parameters, "
                + "\(grouped(w.totalBytes)) bytes\n"
            if c.isLoRA {
                do {
                    let lora = try LoRA(path: w.path)  // small: read with data (inspect opened headers only)
                    out +=
                        "\nLoRA: "
                        + lora.scaleNote(scale: 1).replacingOccurrences(of: "LoRA \(w.path): ", with: "")
                        .replacingOccurrences(
                            of: "Choose with --lora-scale.",
                            with: "Use it with --lora FILE [--lora-scale S] on generate, verify or convert.") + "\n"
                } catch {
                    out += "\nLoRA-like names, but not a usable LoRA: \(error.errorDescription ?? "\(error)")\n"
                }
            }
            totals.tensors += w.infos.count
            totals.parameters += w.totalElements
            totals.bytes += w.totalBytes
        }
        if c.components.count > 1 {
            out +=
                "\ncheckpoint total: \(totals.tensors) tensors, \(grouped(totals.parameters)) parameters, "
                + "\(grouped(totals.bytes)) bytes\n"
        }
        return out
    }

    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    static func grouped(_ n: Int) -> String {
        let digits = Array(String(n))
        var out = ""
        for (i, d) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(d)
        }
        return out
    }
}
