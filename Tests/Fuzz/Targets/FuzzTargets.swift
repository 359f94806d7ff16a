// One entry point per untrusted input AmusedKit reads: libFuzzer drives them (Tools/fuzz.sh builds
// `amused-fuzz` with -sanitize=fuzzer,address), and the test suite replays every committed corpus input through the
// same functions. A target returns normally for any input: a thrown error is the expected answer to a bad file;
// only a crash, a sanitizer report, a timeout or a blown memory limit is a finding.

import AmusedBind
import AmusedCore
import AmusedImage
import AmusedMap
import AmusedModel
import AmusedPack
import AmusedQuantize
import AmusedRead
import AmusedVerify
import Foundation

/// A fuzz target: a name, the extension its input file gets, and what it does with one input.
public struct FuzzTarget: Sendable {
    /// The name `Tools/fuzz.sh` and the corpus folder use.
    public let name: String
    /// What it reads, in words.
    public let summary: String
    /// Runs one input (never throws: errors are the reader's normal answer).
    public let run: @Sendable (UnsafeRawBufferPointer) -> Void
}

/// Every target, by name.
public enum FuzzTargets {
    /// The targets in the order `Tools/fuzz.sh --list` prints them.
    public static let all: [FuzzTarget] = [
        weights("safetensors", ".safetensors", "safetensors header and data"),
        FuzzTarget(name: "index", summary: "a sharded safetensors index (model.safetensors.index.json) over two shards")
        {
            bytes in Scratch.shared.withIndex(bytes) { path in touch { try ShardedSafetensors(indexPath: path) } }
        },
        FuzzTarget(name: "json", summary: "the strict JSON parser, cross-checked by json-c") { bytes in
            _ = try? StrictJSONParser(path: "<fuzz>").parse(UnsafeRawBufferPointer(bytes))
        },
        weights("pytorch", ".pt", "PyTorch zip + pickle (torch.save)"),
        weights("npz", ".npz", "NumPy .npz archives (stored and deflated .npy members)"),
        weights("gguf", ".gguf", "GGUF v2/v3 metadata, tensor infos and quantized blocks"),
        weights("hdf5", ".h5", "HDF5 as every command reads it: through the helper process (amused hdf5-helper)"),
        weights("hdf5-inprocess", ".h5", "HDF5 through libhdf5 in this process (finds what the helper must absorb)"),
        FuzzTarget(name: "bundle", summary: "the .amused bundle reader (plain and zstd), integrity and every tensor") {
            bytes in
            Scratch.shared.withFile(bytes, ext: ".amused") { path in
                guard let bundle = try? AmusedBundle(path: path) else { return }
                guard (try? bundle.verifyIntegrity()) != nil else { return }
                for t in bundle.components.flatMap(\.tensors) {
                    if let q = try? bundle.quantized(t) { _ = q.byteCount }
                }
            }
        },
        FuzzTarget(name: "png", summary: "PNG decoding (chunks, CRCs, inflate, filters, palettes)") { bytes in
            _ = try? PNG.decode(Array(bytes))
        },
        FuzzTarget(name: "jpeg", summary: "JPEG decoding through libjpeg-turbo") { bytes in
            _ = try? JPEG.decode(Array(bytes))
        },
        FuzzTarget(name: "namemap", summary: "a user's name map, applied to the tiny VQ-GAN") { bytes in
            guard let json = try? StrictJSONParser(path: "<fuzz>").parse(UnsafeRawBufferPointer(bytes)),
                let map = try? NameMap(json: json, source: "<fuzz>"), let source = Scratch.shared.vqSource,
                let mapped = try? MappedSource(source, map: map, allowUnmapped: true)
            else { return }
            for info in mapped.infos.prefix(8) { _ = try? mapped.tensor(named: info.name).contiguous() }
        },
        FuzzTarget(name: "policy", summary: "a user's quantization policy, planned over the tiny VQ-GAN") { bytes in
            guard let json = try? StrictJSONParser(path: "<fuzz>").parse(UnsafeRawBufferPointer(bytes)),
                let policy = try? QuantPolicy(json: json, path: "<fuzz>")
            else { return }
            _ = try? QuantPlan(policy: policy, components: [("vqvae", Scratch.shared.vqSpecs)]).summary
        },
        FuzzTarget(name: "lora", summary: "a LoRA file (diffusers/PEFT names, ranks, alphas)") { bytes in
            Scratch.shared.withFile(bytes, ext: ".safetensors") { path in _ = try? LoRA(path: path) }
        },
        FuzzTarget(name: "record", summary: "a reference record's record.json over a fixed record.safetensors") {
            bytes in
            Scratch.shared.withRecord(bytes) { folder in
                guard let record = try? ReferenceRecord(path: folder) else { return }
                for c in record.cases {
                    _ = c.json["prompt"]?.stringValue
                    for name in record.tensors.names where name.hasPrefix(c.name + "/") {
                        _ = try? record.tensor(c, String(name.dropFirst(c.name.count + 1)))
                    }
                }
            }
        },
        FuzzTarget(name: "tokenizer", summary: "the CLIP tokenizer on any bytes as a prompt") { bytes in
            _ = Scratch.shared.tokenizer?.encode(String(decoding: bytes, as: UTF8.self))
        },
    ]

    /// The target called `name`.
    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    /// Loads the fixed files the targets read beside their input (the tokenizer's 49k-token vocabulary takes longer
    /// than libFuzzer's per-input timeout), before the first input.
    public static func prepare() { _ = Scratch.shared }

    /// A weights reader: open the file as its extension says, then read every tensor (views copied contiguous).
    static func weights(_ name: String, _ ext: String, _ summary: String) -> FuzzTarget {
        FuzzTarget(name: name, summary: summary) { bytes in
            Scratch.shared.withFile(bytes, ext: ext) { path in
                touch {
                    name == "hdf5-inprocess" ? try HDF5File(path: path) : try openWeights(path: path)
                }
            }
        }
    }

    /// Opens a source and reads every tensor's values, as `convert` would.
    static func touch(_ open: () throws -> any TensorSource) {
        guard let source = try? open() else { return }
        _ = source.totalBytes
        _ = source.totalElements
        for info in source.infos {
            guard let t = try? source.tensor(named: info.name), let c = try? t.contiguous() else { continue }
            if c.dtype.isScalarConvertible, c.elementCount <= 1 << 16 { _ = try? c.floats() }
        }
    }
}

/// The fixed files targets read beside their input, and the one scratch folder inputs are written to.
final class Scratch: @unchecked Sendable {
    static let shared = Scratch()
    let folder: String
    let lock = NSLock()
    /// The tiny-256 VQ-GAN (for name maps) and its parameter specs (for policies).
    let vqSource: (any TensorSource)?
    let vqSpecs: [ParameterSpec]
    let tokenizer: CLIPTokenizer?

    init() {
        // /dev/shm keeps the per-input write in memory.
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()
        folder = base + "amused-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: folder + "/record", withIntermediateDirectories: true)
        let fixtures = Scratch.fixtures
        let model = fixtures + "/records/tiny-256/model"
        vqSource = try? SafetensorsFile(path: model + "/vqvae/diffusion_pytorch_model.safetensors")
        if let json = try? Checkpoint.readJSON(model + "/vqvae/config.json"),
            let config = try? VQModelConfig(json: json, path: "config.json"),
            let specs = try? VQModel.parameterSpecs(config)
        {
            vqSpecs = specs
        } else {
            vqSpecs = []
        }
        tokenizer = try? AmusedComponents.loadTokenizer(folder: model + "/tokenizer")
        // Records: the fuzzed record.json beside the tiny-256 record's tensors.
        try? FileManager.default.removeItem(atPath: folder + "/record/record.safetensors")
        try? FileManager.default.copyItem(
            atPath: fixtures + "/records/tiny-256/record.safetensors",
            toPath: folder + "/record/record.safetensors")
        // Shards for the index target.
        for shard in ["a", "b"] {
            if let t = try? Tensor(floats: [1, 2, 3, 4], shape: [2, 2]) {
                try? SafetensorsWriter.write([("\(shard).weight", t)], to: folder + "/model-\(shard).safetensors")
            }
        }
    }

    /// `Fixtures/`, found from this source file (or `AMUSED_FIXTURES`).
    static var fixtures: String {
        if let env = ProcessInfo.processInfo.environment["AMUSED_FIXTURES"] { return env }
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path + "/Fixtures"
    }

    static func write(_ bytes: UnsafeRawBufferPointer, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return }
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { break }
            done += n
        }
        close(fd)
    }

    static func write(_ bytes: [UInt8], to path: String) { bytes.withUnsafeBytes { write($0, to: path) } }

    func withFile(_ bytes: UnsafeRawBufferPointer, ext: String, _ body: (String) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        let path = folder + "/input" + ext
        Scratch.write(bytes, to: path)
        body(path)
    }

    func withIndex(_ bytes: UnsafeRawBufferPointer, _ body: (String) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        let path = folder + "/model.safetensors.index.json"
        Scratch.write(bytes, to: path)
        body(path)
    }

    func withRecord(_ bytes: UnsafeRawBufferPointer, _ body: (String) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        Scratch.write(bytes, to: folder + "/record/record.json")
        body(folder + "/record")
    }
}
