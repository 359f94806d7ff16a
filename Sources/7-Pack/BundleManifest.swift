// The manifest of a `.amused` bundle, defined once: each part of it is a type below whose `init(_:)` reads it and whose
// `json` writes it, keys in the order they are written. Reading is strict (every key the shape has, of its type, and no
// other) and names the part that is wrong; the layout checks that need the file (sizes against dtypes and shapes, the
// tiling of buffers, digests) are AmusedBundle's. `Schemas/bundle-manifest.schema.json` describes the same shape for
// tools in other languages, and the tests check every written manifest against it.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedQuantize
import AmusedRead
import Foundation

/// A bundle's manifest.
public struct BundleManifest: Sendable {
    /// The version of AmusedKit that wrote the bundle.
    public var toolkitVersion: String
    /// The checkpoint it was converted from.
    public var source: Source
    /// The LoRA baked into the weights, if any.
    public var lora: LoRA?
    /// The policy applied and what it gave.
    public var quantization: Quantization
    /// How buffers are stored.
    public var compression: Compression
    /// Model components, their tensors in graph order.
    public var components: [Component]
    /// Named files (the tokenizer's).
    public var files: [File]
    /// The scheduler config (an object), if the source had one.
    public var scheduler: JSONObject?
    /// The sampling settings the model recommends, if it names any.
    public var sampling: SamplingDefaults?
    /// The parity report of the conversion's verification (an object, the shape `amused verify --json` prints), if
    /// it was verified.
    public var parity: JSONObject?

    /// The `format` every manifest starts with.
    public static let format = "amused-bundle"

    /// A manifest.
    public init(
        source: Source, lora: LoRA?, quantization: Quantization, compression: Compression,
        components: [Component], files: [File], scheduler: JSONObject?, sampling: SamplingDefaults?,
        parity: JSONObject?, toolkitVersion: String = BundleFormat.toolkitVersion
    ) {
        self.toolkitVersion = toolkitVersion
        self.source = source
        self.lora = lora
        self.quantization = quantization
        self.compression = compression
        self.components = components
        self.files = files
        self.scheduler = scheduler
        self.sampling = sampling
        self.parity = parity
    }

    /// Reads a parsed manifest of the bundle at `path`.
    public init(_ json: JSONValue, path: String) throws(BundleError) {
        let r = try ManifestReader(json, path: path, at: "manifest")
        guard try r.string("format") == Self.format else {
            throw r.fail("format", .malformed, "format is not \"\(Self.format)\"")
        }
        guard r.object["version"]?.intValue == Int(BundleFormat.version) else {
            throw r.fail("version", .unsupported, "manifest version \(r.object["version"]?.serialized ?? "missing")")
        }
        let toolkit = try r.reader("toolkit")
        guard try toolkit.string("name") == "AmusedKit" else {
            throw toolkit.fail("name", .malformed, "the toolkit is not AmusedKit")
        }
        toolkitVersion = try toolkit.string("version")
        try toolkit.noOtherKeys(["name", "version"])
        source = try Source(r.reader("source"))
        lora = try r.nullable("lora").map(LoRA.init)
        quantization = try Quantization(r.reader("quantization"))
        let compression = try Compression(r.reader("compression"))
        self.compression = compression
        components = try r.array("components").enumerated().map { i, c throws(BundleError) in
            try Component(ManifestReader(c, path: path, at: "manifest.components[\(i)]"), compression: compression)
        }
        files = try r.array("files").enumerated().map { i, f throws(BundleError) in
            try File(ManifestReader(f, path: path, at: "manifest.files[\(i)]"), compression: compression)
        }
        scheduler = try r.nullable("scheduler")?.object
        // Absent in bundles written before the key existed.
        if let v = r.object["sampling"], v != .null {
            do { sampling = try SamplingDefaults(json: v, path: path) } catch {
                throw r.fail("sampling", .malformed, error.errorDescription ?? "\(error)")
            }
        } else {
            sampling = nil
        }
        parity = try r.nullable("parity")?.object
        try r.noOtherKeys([
            "format", "version", "toolkit", "source", "lora", "quantization", "compression", "components", "files",
            "scheduler", "sampling", "parity",
        ])
    }

    /// The manifest as written.
    public var json: JSONValue {
        var m = JSONObject()
        m.insert("format", .string(Self.format))
        m.insert("version", .number(String(BundleFormat.version)))
        var toolkit = JSONObject()
        toolkit.insert("name", .string("AmusedKit"))
        toolkit.insert("version", .string(toolkitVersion))
        m.insert("toolkit", .object(toolkit))
        m.insert("source", source.json)
        m.insert("lora", lora?.json ?? .null)
        m.insert("quantization", quantization.json)
        m.insert("compression", compression.json)
        m.insert("components", .array(components.map(\.json)))
        m.insert("files", .array(files.map(\.json)))
        m.insert("scheduler", scheduler.map(JSONValue.object) ?? .null)
        m.insert("sampling", sampling?.json ?? .null)
        m.insert("parity", parity.map(JSONValue.object) ?? .null)
        return .object(m)
    }

    /// Every buffer location in file order: components' tensors' buffers, then files.
    public var locations: [Location] {
        components.flatMap { $0.tensors.flatMap { $0.buffers.map(\.location) } } + files.map(\.location)
    }

    /// The manifest with every buffer location replaced, in file order, by `transform`'s.
    public func relocated(_ transform: (Location) throws -> Location) rethrows -> BundleManifest {
        var m = self
        for c in m.components.indices {
            for t in m.components[c].tensors.indices {
                for b in m.components[c].tensors[t].buffers.indices {
                    m.components[c].tensors[t].buffers[b].location = try transform(
                        m.components[c].tensors[t].buffers[b].location)
                }
            }
        }
        for f in m.files.indices { m.files[f].location = try transform(m.files[f].location) }
        return m
    }

    /// The checkpoint a bundle came from: its name, layout and the SHA-256 of every file the import read.
    public struct Source: Sendable {
        /// The checkpoint's folder or file name.
        public var name: String
        /// Its layout.
        public var layout: Checkpoint.Layout
        /// The files read, by path relative to the checkpoint.
        public var files: [(path: String, bytes: Int, sha256: String)]

        /// A source.
        public init(name: String, layout: Checkpoint.Layout, files: [(path: String, bytes: Int, sha256: String)]) {
            self.name = name
            self.layout = layout
            self.files = files
        }

        init(_ r: ManifestReader) throws(BundleError) {
            name = try r.string("name")
            let l = try r.string("layout")
            guard let layout = Checkpoint.Layout(rawValue: l) else {
                throw r.fail("layout", .malformed, "unknown \(l)")
            }
            self.layout = layout
            files = try r.array("files").enumerated().map { i, f throws(BundleError) in
                let fr = try r.nested(f, "files[\(i)]")
                let file = (try fr.string("path"), try fr.size("bytes"), try fr.sha256("sha256"))
                try fr.noOtherKeys(["path", "bytes", "sha256"])
                return file
            }
            try r.noOtherKeys(["name", "layout", "files"])
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var s = JSONObject()
            s.insert("name", .string(name))
            s.insert("layout", .string(layout.rawValue))
            s.insert(
                "files",
                .array(
                    files.map { f in
                        var o = JSONObject()
                        o.insert("path", .string(f.path))
                        o.insert("bytes", .number(String(f.bytes)))
                        o.insert("sha256", .string(f.sha256))
                        return .object(o)
                    }))
            return .object(s)
        }
    }

    /// A LoRA fused into the weights before quantization.
    public struct LoRA: Sendable {
        /// Its file name.
        public var file: String
        /// The SHA-256 of the file.
        public var sha256: String
        /// The scale it was applied with.
        public var scale: Float

        /// A LoRA record.
        public init(file: String, sha256: String, scale: Float) {
            self.file = file
            self.sha256 = sha256
            self.scale = scale
        }

        init(_ r: ManifestReader) throws(BundleError) {
            file = try r.string("file")
            sha256 = try r.sha256("sha256")
            guard let s = r.object["scale"]?.doubleValue, s.isFinite else {
                throw r.fail("scale", .malformed, "not a number")
            }
            scale = Float(s)
            try r.noOtherKeys(["file", "sha256", "scale"])
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var o = JSONObject()
            o.insert("file", .string(file))
            o.insert("sha256", .string(sha256))
            o.insert("scale", .number(String(scale)))
            return .object(o)
        }
    }

    /// The quantization policy and its totals.
    public struct Quantization: Sendable {
        /// The policy applied.
        public var policy: QuantPolicy
        /// Bytes of the stored tensors.
        public var bytes: Int
        /// Bytes of the same tensors in float32.
        public var float32Bytes: Int
        /// float16 overflows to infinity, summed over tensors.
        public var fp16Overflows: Int
        /// Non-zero values that became zero, summed over tensors.
        public var underflows: Int

        /// A summary.
        public init(policy: QuantPolicy, bytes: Int, float32Bytes: Int, fp16Overflows: Int, underflows: Int) {
            self.policy = policy
            self.bytes = bytes
            self.float32Bytes = float32Bytes
            self.fp16Overflows = fp16Overflows
            self.underflows = underflows
        }

        init(_ r: ManifestReader) throws(BundleError) {
            guard let p = r.object["policy"] else { throw r.fail("policy", .malformed, "missing") }
            do { policy = try QuantPolicy(json: p, path: r.path) } catch {
                throw r.fail("policy", .malformed, (error as? LocalizedError)?.errorDescription ?? "\(error)")
            }
            bytes = try r.size("bytes")
            float32Bytes = try r.size("float32_bytes")
            fp16Overflows = try r.size("fp16_overflows")
            underflows = try r.size("underflows")
            try r.noOtherKeys(["policy", "bytes", "float32_bytes", "fp16_overflows", "underflows"])
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var q = JSONObject()
            q.insert("policy", policy.json)
            q.insert("bytes", .number(String(bytes)))
            q.insert("float32_bytes", .number(String(float32Bytes)))
            q.insert("fp16_overflows", .number(String(fp16Overflows)))
            q.insert("underflows", .number(String(underflows)))
            return .object(q)
        }
    }

    /// How the buffers of a bundle are stored.
    public enum Compression: Sendable, Equatable {
        /// Raw bytes, memory-mappable.
        case none
        /// zstd frames at a level.
        case zstd(level: Int32)

        /// Raw for nil, zstd at `level` otherwise.
        public init(level: Int32?) { self = level.map { .zstd(level: $0) } ?? .none }

        init(_ r: ManifestReader) throws(BundleError) {
            switch try r.string("codec") {
            case "none":
                try r.noOtherKeys(["codec"])
                self = .none
            case "zstd":
                guard let level = r.object["level"]?.intValue, (1...19).contains(level) else {
                    throw r.fail("level", .malformed, "a zstd bundle needs a level of 1…19")
                }
                try r.noOtherKeys(["codec", "level"])
                self = .zstd(level: Int32(level))
            default: throw r.fail("codec", .malformed, "codec must be none or zstd")
            }
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var c = JSONObject()
            switch self {
            case .none: c.insert("codec", .string("none"))
            case .zstd(let level):
                c.insert("codec", .string("zstd"))
                c.insert("level", .number(String(level)))
            }
            return .object(c)
        }
    }

    /// How one buffer's bytes are encoded in the file.
    public enum Encoding: String, Sendable {
        /// The bytes as they are.
        case raw
        /// One zstd frame.
        case zstd
        /// Byte planes of the elements (all first bytes, then all second bytes, …), then one zstd frame.
        case zstdPlanes = "zstd-planes"
    }

    /// Where a buffer is and how it is stored.
    public struct Location: Sendable, Equatable {
        /// First byte in the bundle.
        public var offset: Int
        /// Bytes stored in the bundle.
        public var storedBytes: Int
        /// Bytes once decoded.
        public var bytes: Int
        /// How the stored bytes are encoded.
        public var encoding: Encoding
        /// SHA-256 of the decoded bytes, lower-case hex.
        public var sha256: String

        /// A location.
        public init(offset: Int, storedBytes: Int, bytes: Int, encoding: Encoding, sha256: String) {
            self.offset = offset
            self.storedBytes = storedBytes
            self.bytes = bytes
            self.encoding = encoding
            self.sha256 = sha256
        }

        init(_ r: ManifestReader, compression: Compression) throws(BundleError) {
            offset = try r.size("offset")
            storedBytes = try r.size("stored_bytes")
            bytes = try r.size("bytes")
            let e = try r.string("encoding")
            guard let encoding = Encoding(rawValue: e) else {
                throw r.fail("encoding", .unsupported, "unknown encoding \(e)")
            }
            guard encoding == .raw || compression != .none else {
                throw r.fail("encoding", .inconsistent, "zstd buffer in an uncompressed bundle")
            }
            self.encoding = encoding
            sha256 = try r.sha256("sha256")
        }

        func write(into o: inout JSONObject) {
            o.insert("offset", .number(String(offset)))
            o.insert("stored_bytes", .number(String(storedBytes)))
            o.insert("bytes", .number(String(bytes)))
            o.insert("encoding", .string(encoding.rawValue))
            o.insert("sha256", .string(sha256))
        }

        static let keys = ["offset", "stored_bytes", "bytes", "encoding", "sha256"]
    }

    /// One model component.
    public struct Component: Sendable {
        /// `transformer`, `text_encoder` or `vqvae`.
        public var part: AmusedComponents.Part
        /// The diffusers / transformers class of its config.
        public var className: String
        /// The shipped name map its source went through.
        public var map: String
        /// Its config on diffusers' / transformers' schema.
        public var config: JSONObject
        /// Its tensors in graph order.
        public var tensors: [Tensor]

        /// The component names a manifest may carry.
        static let parts: [AmusedComponents.Part] = [.transformer, .textEncoder, .vqvae]

        /// A component.
        public init(part: AmusedComponents.Part, className: String, map: String, config: JSONObject, tensors: [Tensor])
        {
            self.part = part
            self.className = className
            self.map = map
            self.config = config
            self.tensors = tensors
        }

        init(_ r: ManifestReader, compression: Compression) throws(BundleError) {
            let name = try r.string("name")
            guard let part = Self.parts.first(where: { $0.rawValue == name }) else {
                throw r.fail("name", .malformed, "unknown component \(name)")
            }
            self.part = part
            className = try r.string("class")
            map = try r.string("map")
            config = try r.reader("config").object
            tensors = try r.array("tensors").map { t throws(BundleError) in
                guard let key = t["key"]?.stringValue else {
                    throw r.fail("tensors", .malformed, "a tensor needs a key")
                }
                return try Tensor(r.nested(t, nil, field: "\(name)/\(key)"), compression: compression, component: part)
            }
            try r.noOtherKeys(["name", "class", "map", "config", "tensors"])
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var c = JSONObject()
            c.insert("name", .string(part.rawValue))
            c.insert("class", .string(className))
            c.insert("map", .string(map))
            c.insert("config", .object(config))
            c.insert("tensors", .array(tensors.map(\.json)))
            return .object(c)
        }
    }

    /// One tensor: its storage scheme, the error quantization made, and its buffers.
    public struct Tensor: Sendable {
        /// Canonical parameter key.
        public var key: String
        /// Logical shape.
        public var shape: [Int]
        /// How the graph uses it.
        public var use: ParameterUse
        /// Storage scheme.
        public var scheme: QuantScheme
        /// Why the policy chose the scheme.
        public var reason: String
        /// The error of storing it so.
        public var error: ErrorMeasures
        /// Its buffers, in `scheme.buffers(for:)` order.
        public var buffers: [Buffer]
        /// How its products are computed where the CPU has the instructions (`PlannedTensor.products`: for example
        /// `int8·int8→int32`; `f32` for weights that widen). Derived from the component, use and scheme; recorded
        /// for readers of the manifest. Bundles written before it existed lack it, and read as the derivation.
        public var products: String

        /// A tensor entry of `component` (`transformer`, `text_encoder`, `vqvae`).
        public init(
            component: String, key: String, shape: [Int], use: ParameterUse, scheme: QuantScheme,
            reason: String, error: ErrorMeasures, buffers: [Buffer]
        ) {
            self.key = key
            self.shape = shape
            self.use = use
            self.scheme = scheme
            self.reason = reason
            self.error = error
            self.buffers = buffers
            products = PlannedTensor.products(component: component, use: use, scheme: scheme)
        }

        init(_ r: ManifestReader, compression: Compression, component: AmusedComponents.Part) throws(BundleError) {
            key = try r.string("key")
            shape = try r.shape("shape")
            let u = try r.string("use")
            guard let use = ParameterUse(rawValue: u) else { throw r.fail("use", .malformed, "unknown use \(u)") }
            self.use = use
            let s = try r.string("scheme")
            guard let scheme = QuantScheme(name: s) else { throw r.fail("scheme", .unsupported, "unknown scheme \(s)") }
            self.scheme = scheme
            reason = try r.string("reason")
            error = try ErrorMeasures(r.reader("error"))
            buffers = try r.array("buffers").map { b throws(BundleError) in
                let role = b["role"]?.stringValue ?? "?"
                return try Buffer(r.nested(b, nil, field: "\(r.field) \(role)"), compression: compression)
            }
            products = PlannedTensor.products(component: component.rawValue, use: use, scheme: scheme)
            if r.has("products") {
                let recorded = try r.string("products")
                guard recorded == products else {
                    throw r.fail(
                        "products", .malformed,
                        "says \(recorded) but a \(scheme) \(use.rawValue) weight of the \(component.rawValue) computes as "
                            + "\(products); the manifest was edited or written by an incompatible tool")
                }
            }
            try r.noOtherKeys(["key", "shape", "use", "scheme", "reason", "error", "buffers", "products"])
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var t = JSONObject()
            t.insert("key", .string(key))
            t.insert("shape", .array(shape.map { .number(String($0)) }))
            t.insert("use", .string(use.rawValue))
            t.insert("scheme", .string(scheme.description))
            t.insert("reason", .string(reason))
            t.insert("error", error.json)
            t.insert("buffers", .array(buffers.map(\.json)))
            t.insert("products", .string(products))
            return .object(t)
        }
    }

    /// The error of storing one tensor in its scheme (measurements to six significant digits).
    public struct ErrorMeasures: Sendable {
        /// max |stored − original|.
        public var maxAbs: Double
        /// Root mean square of the error.
        public var rms: Double
        /// `rms` over the root mean square of the original.
        public var relativeRMS: Double
        /// float16 overflows to infinity.
        public var overflows: Int
        /// Non-zero values that became zero.
        public var underflows: Int
        /// Values that became float16 subnormals.
        public var subnormals: Int

        /// The error measured while encoding.
        public init(_ stats: QuantizationStats) {
            maxAbs = stats.maxAbs
            rms = stats.rms
            relativeRMS = stats.relativeRMS
            overflows = stats.overflows
            underflows = stats.underflows
            subnormals = stats.subnormals
        }

        init(_ r: ManifestReader) throws(BundleError) {
            maxAbs = try r.measure("max_abs")
            rms = try r.measure("rms")
            relativeRMS = try r.measure("relative_rms")
            overflows = try r.size("overflows")
            underflows = try r.size("underflows")
            subnormals = try r.size("subnormals")
            try r.noOtherKeys(["max_abs", "rms", "relative_rms", "overflows", "underflows", "subnormals"])
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var e = JSONObject()
            e.insert("max_abs", JSONValue.numeric(maxAbs, digits: 6))
            e.insert("rms", JSONValue.numeric(rms, digits: 6))
            e.insert("relative_rms", JSONValue.numeric(relativeRMS, digits: 6))
            e.insert("overflows", .number(String(overflows)))
            e.insert("underflows", .number(String(underflows)))
            e.insert("subnormals", .number(String(subnormals)))
            return .object(e)
        }
    }

    /// One buffer of a tensor: its role in the scheme, its element type and shape, and where it is.
    public struct Buffer: Sendable {
        /// `data`, `scales` or `minimums`.
        public var role: String
        /// Element type.
        public var dtype: DType
        /// Shape.
        public var shape: [Int]
        /// Where its bytes are.
        public var location: Location

        /// A buffer entry.
        public init(role: String, dtype: DType, shape: [Int], location: Location) {
            self.role = role
            self.dtype = dtype
            self.shape = shape
            self.location = location
        }

        init(_ r: ManifestReader, compression: Compression) throws(BundleError) {
            role = try r.string("role")
            let d = try r.string("dtype")
            guard let dtype = DType(rawValue: d) else { throw r.fail("dtype", .malformed, "unknown dtype \(d)") }
            self.dtype = dtype
            shape = try r.shape("shape")
            location = try Location(r, compression: compression)
            try r.noOtherKeys(["role", "dtype", "shape"] + Location.keys)
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var b = JSONObject()
            b.insert("role", .string(role))
            b.insert("dtype", .string(dtype.rawValue))
            b.insert("shape", .array(shape.map { .number(String($0)) }))
            location.write(into: &b)
            return .object(b)
        }
    }

    /// A named file (a tokenizer file) stored as one buffer of bytes.
    public struct File: Sendable {
        /// Its name, one of `AmusedBundle.fileNames`.
        public var name: String
        /// Where its bytes are.
        public var location: Location

        /// A file entry.
        public init(name: String, location: Location) {
            self.name = name
            self.location = location
        }

        init(_ r: ManifestReader, compression: Compression) throws(BundleError) {
            name = try r.string("name")
            // An allowlist: no other name, and no path, is ever accepted.
            guard AmusedBundle.fileNames.contains(name) else {
                throw BundleError(
                    .forbidden, path: r.path, field: "file \(name)",
                    "file names are limited to \(AmusedBundle.fileNames.joined(separator: ", "))")
            }
            location = try Location(r.nested(.object(r.object), nil, field: "file \(name)"), compression: compression)
            try r.noOtherKeys(["name"] + Location.keys)
        }

        /// This part as the manifest writes it.
        public var json: JSONValue {
            var f = JSONObject()
            f.insert("name", .string(name))
            location.write(into: &f)
            return .object(f)
        }
    }
}

/// Typed, strict access to one object of a manifest; errors name the bundle and the object (`field`).
struct ManifestReader {
    let object: JSONObject
    let path: String
    /// What the object is, as errors name it (`manifest.quantization`, `transformer/<key>`, `file <name>`).
    let field: String

    init(_ json: JSONValue, path: String, at field: String) throws(BundleError) {
        guard let object = json.objectValue else {
            throw BundleError(.malformed, path: path, field: field, "\(Self.kind(json)) where an object belongs")
        }
        self.object = object
        self.path = path
        self.field = field
    }

    /// An error about `key` of this object.
    func fail(_ key: String, _ family: ReadError.Family, _ message: String) -> BundleError {
        BundleError(family, path: path, field: field, "\(key): \(message)")
    }

    /// A reader for `json` inside this object, named `field.name` (or `field` when given).
    func nested(_ json: JSONValue, _ name: String?, field: String? = nil) throws(BundleError) -> ManifestReader {
        try ManifestReader(json, path: path, at: field ?? (self.field + "." + (name ?? "")))
    }

    /// A reader for the object under `key`.
    func reader(_ key: String) throws(BundleError) -> ManifestReader {
        guard let v = object[key] else { throw fail(key, .malformed, "missing") }
        return try nested(v, key)
    }

    /// The object under `key`, or nil for `null`.
    func nullable(_ key: String) throws(BundleError) -> ManifestReader? {
        guard let v = object[key] else { throw fail(key, .malformed, "missing") }
        return v == .null ? nil : try nested(v, key)
    }

    /// Whether the object has `key` (for keys older manifests lack).
    func has(_ key: String) -> Bool { object[key] != nil }

    func string(_ key: String) throws(BundleError) -> String {
        guard let s = object[key]?.stringValue else { throw fail(key, .malformed, "expected a string") }
        return s
    }

    func array(_ key: String) throws(BundleError) -> [JSONValue] {
        guard let a = object[key]?.arrayValue else { throw fail(key, .malformed, "expected a list") }
        return a
    }

    /// A non-negative integer (a size, a count or an offset).
    func size(_ key: String) throws(BundleError) -> Int {
        guard let n = object[key]?.intValue, n >= 0 else {
            throw fail(key, .malformed, "expected a non-negative integer")
        }
        return n
    }

    /// A measurement: a non-negative number, or "inf" / "nan" (JSON has neither).
    func measure(_ key: String) throws(BundleError) -> Double {
        switch object[key] {
        case .number(let text)?: if let d = Double(text), d >= 0 { return d }
        case .string("inf")?: return .infinity
        case .string("nan")?: return .nan
        default: break
        }
        throw fail(key, .malformed, "expected a non-negative number, \"inf\" or \"nan\"")
    }

    /// A lower-case hex SHA-256.
    func sha256(_ key: String) throws(BundleError) -> String {
        let s = try string(key)
        guard s.utf8.count == 64, s.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            throw fail(key, .malformed, "expected 64 lower-case hex digits")
        }
        return s
    }

    /// A shape: at most 8 non-negative integers whose product, in float32 bytes, fits in 64 bits.
    func shape(_ key: String) throws(BundleError) -> [Int] {
        let a = try array(key)
        let shape = a.compactMap(\.intValue)
        guard shape.count == a.count, shape.allSatisfy({ $0 >= 0 }), shape.count <= 8 else {
            throw fail(key, .malformed, "expected a list of at most 8 non-negative integers")
        }
        // A correct SHA-256 proves nothing about the sizes: anyone can compute one.
        guard SizeMath.byteCount(shape: shape, dtype: .f32) != nil else {
            throw fail(key, .arithmeticOverflow, "\(describeShape(shape)) overflows 64 bits")
        }
        return shape
    }

    /// Refuses keys other than `known`.
    func noOtherKeys(_ known: [String]) throws(BundleError) {
        if let k = object.keys.first(where: { !known.contains($0) }) {
            throw fail(k, .malformed, "unknown key (known: \(known.joined(separator: ", ")))")
        }
    }

    static func kind(_ v: JSONValue) -> String {
        switch v {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "a list"
        case .object: "an object"
        }
    }
}
