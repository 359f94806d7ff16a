// Finds the weights in what a user points at: one file, a sharded index, one component folder, or a whole
// diffusers pipeline folder (model_index.json with transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/).

import AmusedCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The on-disk format of a weights file, detected from its first bytes and its name.
public enum WeightFormat: String, Sendable {
    /// safetensors, one file.
    case safetensors
    /// safetensors shards behind a `*.safetensors.index*.json`.
    case shardedSafetensors = "safetensors-sharded"
    /// A zip archive (PyTorch `.bin`/`.pt` since torch 1.6, or NumPy `.npz`).
    case zip
    /// HDF5.
    case hdf5
    /// GGUF.
    case gguf
    /// A pickle stream without a zip container (legacy torch.save).
    case legacyPickle = "legacy-pickle"
    /// One NumPy array (`numpy.save`).
    case npy

    /// Detects the format of `path` from its magic bytes (and `.index.json` names for sharded safetensors).
    public static func detect(path: String) throws(ReadError) -> WeightFormat {
        if path.hasSuffix(".json") && path.contains(".safetensors.index") { return .shardedSafetensors }
        let file: ReadOnlyFile
        do { file = try ReadOnlyFile(path: path) } catch { throw ReadError.from(error, path: path) }
        let head: [UInt8]
        do { head = try file.read(at: 0, count: min(16, file.byteCount)) } catch {
            throw ReadError.from(error, path: path)
        }
        // The name decides first: a safetensors file starts with its header length, whose bytes can be anything
        // (a length of 128 + 256k starts with 0x80, the pickle protocol opcode).
        if path.hasSuffix(".safetensors") { return .safetensors }
        if path.hasSuffix(".gguf") { return .gguf }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .zip }
        if head.starts(with: [0x93] + Array("NUMPY".utf8)) { return .npy }
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return .hdf5 }
        if head.starts(with: Array("GGUF".utf8)) { return .gguf }
        if head.count >= 9 && [UInt8(ascii: "{"), 0x20, 0x0A, 0x09, 0x0D].contains(head[8]) { return .safetensors }
        if head.first == 0x80 { return .legacyPickle }
        throw ReadError(
            .unsupported, path: path, offset: 0,
            "not a recognised weights format "
                + "(safetensors, a safetensors index, PyTorch zip, HDF5, NumPy .npz or GGUF)")
    }
}

/// Opens a weights file or sharded index as a `TensorSource`; HDF5 files are parsed as `hdf5` says (by default in
/// the helper process).
public func openWeights(path: String, mapData: Bool = true, hdf5: HDF5Reading = .default) throws(ReadError)
    -> any TensorSource
{
    switch try WeightFormat.detect(path: path) {
    case .safetensors: return try SafetensorsFile(path: path, mapData: mapData)
    case .shardedSafetensors: return try ShardedSafetensors(indexPath: path, mapData: mapData)
    case .zip:
        // By name first, then by content: torch.save archives hold `<dir>/data.pkl`; numpy.savez archives hold
        // only `.npy` members.
        if [".pt", ".pth", ".bin", ".ckpt"].contains(where: path.hasSuffix) {
            return try PyTorchCheckpoint(path: path)
        }
        if path.hasSuffix(".npz") { return try NumpyArchive(path: path) }
        let names = try ZipArchive(path: path).entries.map(\.name)
        if names.contains(where: { $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }) {
            return try PyTorchCheckpoint(path: path)
        }
        if !names.isEmpty && names.allSatisfy({ $0.hasSuffix(".npy") }) { return try NumpyArchive(path: path) }
        throw ReadError(
            .unsupported, path: path, offset: 0, "a zip archive that is neither torch.save's nor numpy.savez's")
    case .gguf: return try GGUFFile(path: path)
    case .npy: return try NumpyArray(path: path)
    case .hdf5:
        switch hdf5 {
        case .inProcess: return try HDF5File(path: path)
        case .isolated(let helper): return try HDF5Isolation.open(path: path, helper: helper)
        }
    case let other:
        throw ReadError(
            .unsupported, path: path, offset: 0,
            other == .legacyPickle
                ? "a pre-1.6 torch.save file (bare pickle) is not read; re-save it with a current torch.save"
                : "\(other.rawValue) files are recognised but not read yet; convert to safetensors first")
    }
}

/// One component of a checkpoint: its folder, config and weights.
public struct CheckpointComponent: Sendable {
    /// The component's name (`transformer`, `vqvae`, `text_encoder`, … or the file name for a lone file).
    public let name: String
    /// The class the config or model_index names (`UVit2DModel`, `VQModel`, `CLIPTextModelWithProjection`, …).
    public let className: String?
    /// The component's config, when it has one.
    public let config: JSONValue?
    /// Path of that config.
    public let configPath: String?
    /// The weights, when the component has any (a tokenizer or scheduler has none).
    public let weights: (any TensorSource)?
    /// Other files the component carries (tokenizer vocabularies, scheduler configs).
    public let files: [String]
    /// The folder its config and files are in (nil for a lone file's own component).
    public var folder: String? = nil
}

/// The tensors of `source` whose names start with `prefix`, named without it (one component of a single file).
public struct PrefixedSource: TensorSource {
    /// The whole file.
    public let source: any TensorSource
    /// The prefix, with its dot (`transformer.`).
    public let prefix: String
    /// The component's tensors, prefix stripped.
    public let infos: [TensorInfo]
    /// The file's path.
    public var path: String { source.path }
    /// The file's format.
    public var format: WeightFormat { source.format }

    /// The tensors of `source` under `prefix`.
    public init(_ source: any TensorSource, prefix: String) {
        self.source = source
        self.prefix = prefix
        infos = source.infos.filter { $0.name.hasPrefix(prefix) }.map {
            $0.renamed(String($0.name.dropFirst(prefix.count)))
        }
    }

    /// The tensor `prefix + name`.
    public func tensor(named name: String) throws(ReadError) -> Tensor { try source.tensor(named: prefix + name) }
}

/// A checkpoint as found on disk.
public struct Checkpoint: Sendable {
    /// How the checkpoint is laid out.
    public enum Layout: String, Sendable, CaseIterable {
        /// A diffusers pipeline folder with `model_index.json`.
        case pipeline
        /// One component folder with `config.json` and weights.
        case component
        /// A single weights file.
        case file
        /// An original open-muse folder: `transformer/` (MaskGiTUViT_v2) and `vae/` (VQGANModel) with open-muse
        /// configs and `pytorch_model.bin`, `text_encoder/` holding the CLIP model and the tokenizer files.
        case openMuse = "open-muse"
        /// One weights file holding every component under a prefix (`transformer.`, `vqvae.`, `text_encoder.`),
        /// with configs, tokenizer and scheduler taken from a diffusers folder given separately.
        case singleFile = "single-file"
    }

    /// Whether `names` are those of a LoRA file (every one an A/B weight or an alpha): such a file also keeps its
    /// tensors under `transformer.` / `text_encoder.`, but is an adapter, not a single-file checkpoint.
    public static func looksLikeLoRA(_ names: [String]) -> Bool {
        !names.isEmpty && names.allSatisfy { n in loraSuffixes.contains { n.hasSuffix($0.suffix) } }
    }

    /// The tensor-name endings of LoRA files and what each holds: PEFT's `lora_A`/`lora_B`, the older
    /// `lora.down`/`lora.up`, and kohya's `alpha`.
    public static let loraSuffixes: [(suffix: String, role: LoRARole)] = [
        (".lora_A.weight", .down), (".lora_B.weight", .up), (".lora.down.weight", .down), (".lora.up.weight", .up),
        (".alpha", .alpha),
    ]

    /// What a LoRA tensor holds.
    public enum LoRARole: Sendable {
        /// A, [rank, in].
        case down
        /// B, [out, rank].
        case up
        /// The scalar alpha.
        case alpha
    }

    /// Whether this checkpoint is a lone LoRA file.
    public var isLoRA: Bool {
        layout == .file && Self.looksLikeLoRA(components.first?.weights?.names ?? [])
    }

    /// The prefixes a single-file checkpoint may use, and the component each names.
    public static let singleFilePrefixes = [
        ("transformer.", "transformer"), ("vqvae.", "vqvae"), ("vae.", "vqvae"),
        ("text_encoder.", "text_encoder"),
    ]

    /// The path given.
    public let path: String
    /// The layout detected.
    public let layout: Layout
    /// The pipeline's `model_index.json`, for a pipeline folder.
    public let modelIndex: JSONValue?
    /// Components, in model_index order (or the one component/file).
    public let components: [CheckpointComponent]

    /// How a weights file is opened; the command line passes one that reads HDF5 in a helper process.
    public typealias Opener = @Sendable (_ path: String, _ mapData: Bool) throws(ReadError) -> any TensorSource

    /// Opens what `path` points at. `variant` selects `*.{variant}.safetensors` files (for example `fp16`);
    /// `mapData` false reads headers only (listing a 2.4 GB file then reads a few kilobytes). The layout is detected
    /// from the files unless `layout` forces one (an error when the files do not fit it). `configs` is a diffusers
    /// pipeline folder whose configs, tokenizer and scheduler a single-file checkpoint uses.
    public init(
        path: String, variant: String? = nil, mapData: Bool = true, layout forced: Layout? = nil,
        configs: String? = nil,
        opener: Opener = { (p, m) throws(ReadError) in try openWeights(path: p, mapData: m) }
    ) throws(ReadError) {
        let path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        self.path = path
        guard let kind = Self.fileKind(path) else {
            throw ReadError(.io, path: path, "no such file or folder")
        }
        func refuse(_ why: String) -> ReadError {
            ReadError(.inconsistent, path: path, "--layout \(forced!.rawValue) does not fit: \(why)")
        }
        if kind == .file {
            guard forced == nil || forced == .file || forced == .singleFile else {
                throw refuse("this is a single file")
            }
            let source = try opener(path, mapData)
            let prefixed = source.infos.allSatisfy { info in
                Self.singleFilePrefixes.contains { info.name.hasPrefix($0.0) }
            }
            modelIndex = nil
            let lora = Self.looksLikeLoRA(source.infos.map(\.name))
            if forced == .singleFile || (forced == nil && prefixed && !lora && !source.infos.isEmpty) {
                if let stray = source.infos.first(where: { info in
                    !Self.singleFilePrefixes.contains { info.name.hasPrefix($0.0) }
                }) {
                    throw ReadError(
                        .inconsistent, path: path, field: stray.name,
                        "a single-file checkpoint keeps every "
                            + "tensor under transformer., vqvae. (or vae.) or text_encoder.; this one is under none")
                }
                layout = .singleFile
                components = try Self.singleFileComponents(source, configs: configs)
                return
            }
            layout = .file
            let name = path.split(separator: "/").last.map(String.init) ?? path
            components = [
                CheckpointComponent(
                    name: name, className: nil, config: nil, configPath: nil,
                    weights: source, files: [])
            ]
            return
        }
        if forced == .file || forced == .singleFile { throw refuse("this is a folder") }
        if forced == .pipeline && Self.fileKind(path + "/model_index.json") != .file {
            throw refuse("there is no model_index.json")
        }
        if forced == .openMuse
            && (Self.fileKind(path + "/transformer/config.json") != .file || Self.fileKind(path + "/vae") != .folder)
        {
            throw refuse("an open-muse folder has transformer/config.json and vae/")
        }
        if (forced == nil || forced == .pipeline) && Self.fileKind(path + "/model_index.json") == .file {
            layout = .pipeline
            let index = try Self.readJSON(path + "/model_index.json")
            modelIndex = index
            guard let entries = index.objectValue else {
                throw ReadError(.malformed, path: path + "/model_index.json", "model_index.json is not an object")
            }
            var components: [CheckpointComponent] = []
            for (key, value) in entries.entries where !key.hasPrefix("_") {
                guard let spec = value.arrayValue, spec.count == 2, let cls = spec[1].stringValue else { continue }
                let folder = path + "/" + key
                guard Self.fileKind(folder) == .folder else {
                    throw ReadError(
                        .inconsistent, path: path + "/model_index.json", field: key,
                        "model_index.json names component \(key) but \(folder) is not a folder")
                }
                components.append(
                    try Self.component(
                        name: key, folder: folder, className: cls, variant: variant,
                        mapData: mapData, opener: opener))
            }
            self.components = components
            return
        }
        if forced == nil || forced == .openMuse, Self.fileKind(path + "/transformer/config.json") == .file,
            Self.fileKind(path + "/vae") == .folder
        {
            layout = .openMuse
            modelIndex = nil
            var components: [CheckpointComponent] = []
            for key in ["transformer", "vae", "text_encoder"] where Self.fileKind(path + "/" + key) == .folder {
                components.append(
                    try Self.component(
                        name: key, folder: path + "/" + key, className: nil,
                        variant: variant, mapData: mapData, opener: opener))
            }
            self.components = components
            return
        }
        layout = .component
        modelIndex = nil
        let name = path.split(separator: "/").last.map(String.init) ?? path
        components = [
            try Self.component(
                name: name, folder: path, className: nil, variant: variant, mapData: mapData,
                opener: opener)
        ]
    }

    /// The component called `name`.
    public func component(_ name: String) -> CheckpointComponent? { components.first { $0.name == name } }

    /// The components of a single file: one per prefix present, configs from `configs/<component>/`, and the
    /// tokenizer and scheduler of `configs` when it has them.
    private static func singleFileComponents(_ source: any TensorSource, configs: String?) throws(ReadError)
        -> [CheckpointComponent]
    {
        var components: [CheckpointComponent] = []
        for (prefix, name) in singleFilePrefixes where source.infos.contains(where: { $0.name.hasPrefix(prefix) }) {
            if components.contains(where: { $0.name == name }) {
                throw ReadError(
                    .inconsistent, path: source.path, field: prefix,
                    "both vqvae. and vae. prefixes: one file holds two VQ-GANs")
            }
            var config: JSONValue? = nil, configPath: String? = nil, folder: String? = nil
            if let configs {
                folder = configs + "/" + name
                configPath = configs + "/" + name + "/config.json"
                guard fileKind(configPath!) == .file else {
                    throw ReadError(
                        .io, path: configPath!, "the file has \(name) tensors but --configs has no \(name)/config.json")
                }
                config = try readJSON(configPath!)
            }
            components.append(
                CheckpointComponent(
                    name: name,
                    className: config?["_class_name"]?.stringValue
                        ?? config?["architectures"]?.arrayValue?.first?.stringValue,
                    config: config, configPath: configPath, weights: PrefixedSource(source, prefix: prefix), files: [],
                    folder: folder))
        }
        guard let configs else { return components }
        for name in ["tokenizer", "scheduler"] where fileKind(configs + "/" + name) == .folder {
            let scheduler = configs + "/" + name + "/scheduler_config.json"
            let config = fileKind(scheduler) == .file ? try readJSON(scheduler) : nil
            components.append(
                CheckpointComponent(
                    name: name, className: config?["_class_name"]?.stringValue,
                    config: config, configPath: config == nil ? nil : scheduler,
                    weights: nil, files: listFolder(configs + "/" + name),
                    folder: configs + "/" + name))
        }
        return components
    }

    private static func component(
        name: String, folder: String, className: String?, variant: String?,
        mapData: Bool, opener: Opener
    ) throws(ReadError) -> CheckpointComponent {
        var configPath: String? = nil
        var config: JSONValue? = nil
        for candidate in ["config.json", "scheduler_config.json"] where fileKind(folder + "/" + candidate) == .file {
            configPath = folder + "/" + candidate
            config = try readJSON(folder + "/" + candidate)
            break
        }
        let listing = listFolder(folder)
        let weightsPath = try findWeights(in: folder, listing: listing, variant: variant)
        let weights: (any TensorSource)? = try weightsPath.map { (p) throws(ReadError) in
            try opener(p, mapData)
        }
        let cls =
            className ?? config?["_class_name"]?.stringValue
            ?? config?["architectures"]?.arrayValue?.first?.stringValue
        let others = listing.filter {
            !$0.hasSuffix(".safetensors") && !$0.contains(".safetensors.index")
                && $0 != "config.json" && $0 != "scheduler_config.json"
        }
        return CheckpointComponent(
            name: name, className: cls, config: config, configPath: configPath,
            weights: weights, files: others, folder: folder)
    }

    /// The weights file of a component folder: the diffusers/transformers names first, then a lone safetensors file.
    private static func findWeights(in folder: String, listing: [String], variant: String?) throws(ReadError)
        -> String?
    {
        let infix = variant.map { ".\($0)" } ?? ""
        let preferred = [
            "diffusion_pytorch_model\(infix).safetensors", "model\(infix).safetensors",
            "diffusion_pytorch_model.safetensors.index\(infix).json",
            "diffusion_pytorch_model\(infix).safetensors.index.json",
            "model.safetensors.index\(infix).json", "model\(infix).safetensors.index.json",
        ]
        for name in preferred where listing.contains(name) { return folder + "/" + name }
        let safetensors = listing.filter { name in
            name.hasSuffix(".safetensors")
                && (variant == nil
                    ? !name.dropLast(".safetensors".count).contains(".") : name.hasSuffix("\(infix).safetensors"))
        }
        if safetensors.count == 1 { return folder + "/" + safetensors[0] }
        if safetensors.count > 1 {
            throw ReadError(
                .inconsistent, path: folder,
                "several weights files (\(safetensors.joined(separator: ", ")))"
                    + " and no index; point at one file")
        }
        if variant != nil, listing.contains(where: { $0.hasSuffix(".safetensors") }) {
            throw ReadError(
                .inconsistent, path: folder,
                "no \(variant!) variant weights here; drop --variant "
                    + "or choose one of: " + listing.filter { $0.hasSuffix(".safetensors") }.joined(separator: ", "))
        }
        for candidate in ["diffusion_pytorch_model\(infix).bin", "pytorch_model\(infix).bin", "model\(infix).bin"]
        where listing.contains(candidate) { return folder + "/" + candidate }
        let other = listing.filter {
            [".bin", ".pt", ".pth", ".ckpt", ".h5", ".npz", ".gguf"].contains(where: $0.hasSuffix)
        }
        if other.count == 1 { return folder + "/" + other[0] }
        return nil
    }

    enum FileKind { case file, folder }

    static func fileKind(_ path: String) -> FileKind? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .folder
        default: return nil
        }
    }

    static func listFolder(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." && fileKind(path + "/" + name) == .file { names.append(name) }
        }
        return names.sorted()
    }

    /// Reads a JSON config (at most 16 MiB) strictly.
    public static func readJSON(_ path: String) throws(ReadError) -> JSONValue {
        let file: ReadOnlyFile
        do { file = try ReadOnlyFile(path: path) } catch { throw ReadError.from(error, path: path) }
        guard file.byteCount <= 16 << 20 else {
            throw ReadError(.limitExceeded, path: path, "config is \(file.byteCount) bytes (limit 16 MiB)")
        }
        do { return try StrictJSONParser(path: path).parse(try file.read(at: 0, count: file.byteCount)) } catch let e
            as ReadError
        { throw e } catch { throw ReadError(.io, path: path, "\(error)") }
    }
}
