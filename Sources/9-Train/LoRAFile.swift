// Writing what a fine-tune makes: the LoRA file, and the checkpoint that resumes a run.
//
// The LoRA file is what train_amused.py's save hook writes — `transformer.<module>.lora_A.weight` [r, in] and
// `…lora_B.weight` [out, r], float32 — plus the safetensors metadata entry diffusers ≥ 0.34 reads back as the PEFT
// LoraConfig (`lora_adapter_metadata`: {"transformer.r", "transformer.lora_alpha", "transformer.target_modules", and empty
// rank and alpha patterns}),
// so the scale alpha / r is recorded in the file: diffusers' load_lora_into_transformer and `amused generate --lora`
// both apply it, where files without it are reloaded at scale 1.
//
// A checkpoint is the same tensors plus AdamW's moments (`optimizer.exp_avg.transformer.<module>.lora_A.weight`, …), the
// generator's state and the step (metadata `amused_finetune`, with the options and what was trained on, so a resume
// with different settings is refused). Both are written atomically: a Ctrl-C leaves the previous file whole.

import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

/// The files a fine-tune writes and reads.
public enum LoRAFile {
    /// The safetensors metadata key diffusers stores the LoraConfig under.
    public static let adapterMetadataKey = "lora_adapter_metadata"
    /// The metadata key of a checkpoint's run state.
    public static let checkpointKey = "amused_finetune"

    /// The LoraConfig diffusers rebuilds per component: r, lora_alpha, target_modules (and empty rank and alpha
    /// patterns, which diffusers reads unconditionally), under the component prefix.
    static func adapterMetadata(_ sets: [LoRAAdapters]) -> String {
        var fields: [(String, String)] = []
        for lora in sets {
            let suffixes =
                lora.component == "transformer" ? LoRAAdapters.targetSuffixes : LoRAAdapters.textEncoderTargetSuffixes
            let targets = suffixes.map { JSONValue.quote(String($0.dropFirst())) }.joined(separator: ", ")
            fields += [
                ("\(lora.component).alpha_pattern", "{}"), ("\(lora.component).lora_alpha", formatNumber(lora.alpha)),
                ("\(lora.component).r", "\(lora.rank)"), ("\(lora.component).rank_pattern", "{}"),
                ("\(lora.component).target_modules", "[\(targets)]"),
            ]
        }
        // json.dumps(…, indent=2, sort_keys=True) as diffusers writes it; any JSON object reads back the same.
        return "{\n"
            + fields.sorted { $0.0 < $1.0 }.map { "  \(JSONValue.quote($0.0)): \($0.1)" }.joined(separator: ",\n")
            + "\n}"
    }

    static func formatNumber(_ x: Float) -> String {
        x == x.rounded() && abs(x) < 1e7 ? String(Int(x)) : "\(x)"
    }

    static func loraTensors(_ lora: LoRAAdapters) throws -> [(name: String, tensor: Tensor)] {
        try lora.adapters.flatMap { a in
            [
                (
                    "\(lora.component).\(a.module).lora_A.weight",
                    try Tensor(floats: a.a, shape: [lora.rank, a.inFeatures])
                ),
                (
                    "\(lora.component).\(a.module).lora_B.weight",
                    try Tensor(floats: a.b, shape: [a.outFeatures, lora.rank])
                ),
            ]
        }
    }

    /// Writes `lora` (and the text encoder's adapters, when trained) as a diffusers/PEFT LoRA file at `path`,
    /// atomically, with the alphas recorded.
    public static func write(_ lora: LoRAAdapters, text: LoRAAdapters? = nil, to path: String, note: String? = nil)
        throws
    {
        let sets = [lora] + (text.map { [$0] } ?? [])
        var metadata: [(String, String)] = [("format", "pt"), (adapterMetadataKey, adapterMetadata(sets))]
        if let note { metadata.append(("amused_note", note)) }
        try SafetensorsWriter.write(try sets.flatMap(loraTensors), metadata: metadata, to: path)
    }

    /// What identifies a run, for refusing a resume that would mix two.
    public struct RunIdentity: Sendable, Equatable, Codable {
        /// The options.
        public var options: FineTuneOptions
        /// The prompt trained on.
        public var prompt: String
        /// SHA-256 of the image file.
        public var imageSHA256: String
        /// The preservation prompts, if any.
        public var preservationPrompts: [String]
        /// A fingerprint of the model's weights (`LoRAFile.fingerprint`), so that a resume on other weights of the
        /// same config is refused.
        public var model: String = ""

        /// The identity of a run on `prompt` and the image with digest `imageSHA256`, on weights with fingerprint
        /// `model`.
        public init(
            options: FineTuneOptions, prompt: String, imageSHA256: String, preservationPrompts: [String] = [],
            model: String = ""
        ) {
            self.options = options
            self.prompt = prompt
            self.imageSHA256 = imageSHA256
            self.preservationPrompts = preservationPrompts
            self.model = model
        }
    }

    /// Writes a resumable checkpoint of `state` at `path`, atomically.
    public static func writeCheckpoint(_ state: FineTuneState, identity: RunIdentity, to path: String) throws {
        var sets = [(state.adapters, state.optimizer)]
        if let text = state.text { sets.append((text.adapters, text.optimizer)) }
        var tensors: [(name: String, tensor: Tensor)] = []
        for (lora, optimizer) in sets {
            tensors += try loraTensors(lora)
            for (k, a) in lora.adapters.enumerated() {
                for (slot, part, shape) in [
                    (2 * k, "lora_A", [lora.rank, a.inFeatures]),
                    (2 * k + 1, "lora_B", [a.outFeatures, lora.rank]),
                ] {
                    let name = "\(lora.component).\(a.module).\(part).weight"
                    tensors.append(
                        ("optimizer.exp_avg.\(name)", try Tensor(floats: optimizer.expAvg[slot], shape: shape)))
                    tensors.append(
                        ("optimizer.exp_avg_sq.\(name)", try Tensor(floats: optimizer.expAvgSq[slot], shape: shape)))
                }
            }
        }
        let snapshot = state.generator.snapshot.map(Int64.init)
        tensors.append(("generator.state", try Tensor(int64s: snapshot, shape: [snapshot.count])))
        let run = CheckpointRun(step: state.step, optimizerStep: state.optimizer.step, identity: identity)
        let runText = String(decoding: try encoder.encode(run), as: UTF8.self)
        try SafetensorsWriter.write(
            tensors,
            metadata: [
                ("format", "pt"), (adapterMetadataKey, adapterMetadata(sets.map(\.0))),
                (checkpointKey, runText),
            ], to: path)
    }

    /// A fingerprint of a component's weights: CRC-32 over every tensor's name, shape and up to 64 values spread
    /// through it (cheap for a 2.4 GB transformer; different fine-tunes of one config differ in it).
    public static func fingerprint(_ source: any TensorSource) throws -> String {
        var crc: UInt32 = 0
        for info in source.infos.sorted(by: { $0.name < $1.name }) {
            crc = Array((info.name + describeShape(info.shape)).utf8).withUnsafeBytes {
                CRC32.checksum($0, continuing: crc)
            }
            let t = try source.tensor(named: info.name)
            let step = max(1, info.byteCount / 64)
            try t.withUnsafeBytes { raw in
                var samples: [UInt8] = []
                var offset = 0
                while offset < raw.count {
                    samples.append(raw[offset])
                    offset += step
                }
                crc = samples.withUnsafeBytes { CRC32.checksum($0, continuing: crc) }
            }
        }
        return String(format: "%08x", crc)
    }

    /// A checkpoint's run state, stored as JSON in its metadata.
    struct CheckpointRun: Codable {
        var step: Int
        var optimizerStep: Int
        var identity: RunIdentity
    }

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }

    /// Reads a checkpoint written by `writeCheckpoint` for `config`; throws naming the file and key when it is not
    /// one (every tensor's dtype and shape are checked before it is read), or when it was made with different
    /// weights, options, prompt, image or preservation prompts than `identity`.
    public static func readCheckpoint(
        path: String, config: UVit2DConfig, textConfig: CLIPTextConfig? = nil,
        identity: RunIdentity
    ) throws -> FineTuneState {
        let file = try SafetensorsFile(path: path)
        guard let runText = file.metadataValue(checkpointKey),
            let run = try? JSONDecoder().decode(CheckpointRun.self, from: Data(runText.utf8)),
            run.step >= 0, run.optimizerStep == run.step
        else {
            throw TrainError(
                "\(path): not an AmusedKit fine-tune checkpoint (no valid `\(checkpointKey)` metadata); "
                    + "pass a file written by `amused finetune --checkpoint-every`")
        }
        let savedIdentity = run.identity, step = run.step, optimizerStep = run.optimizerStep
        if savedIdentity != identity {
            let what =
                savedIdentity.prompt != identity.prompt
                ? "prompt \"\(savedIdentity.prompt)\""
                : savedIdentity.imageSHA256 != identity.imageSHA256
                    ? "image (SHA-256 \(savedIdentity.imageSHA256.prefix(12))…)"
                    : savedIdentity.preservationPrompts != identity.preservationPrompts
                        ? "set of --preserve prompts"
                        : savedIdentity.model != identity.model
                            ? "model (weights fingerprint \(savedIdentity.model))"
                            : "options"
            throw TrainError(
                "\(path): the checkpoint was made with a different \(what); resume with the same "
                    + "--image, --prompt and options, or start a new run")
        }
        let o = identity.options
        guard step <= o.steps else {
            throw TrainError("\(path): the checkpoint is at step \(step), beyond --steps \(o.steps)")
        }
        /// The float32 tensor `name` of exactly `shape`, every value finite (and ≥ 0 when `nonNegative`).
        func floats(_ name: String, _ shape: [Int], nonNegative: Bool = false) throws -> [Float] {
            guard let info = file.infos.first(where: { $0.name == name }) else {
                throw TrainError("\(path): missing tensor \(name); the checkpoint is incomplete or for another model")
            }
            guard info.dtype == .f32, info.shape == shape else {
                throw TrainError(
                    "\(path): \(name) is \(info.dtype) \(describeShape(info.shape)), expected F32 "
                        + "\(describeShape(shape)); the checkpoint is for another model or rank")
            }
            let values = try file.tensor(named: name).floats()
            guard values.allSatisfy({ $0.isFinite && (!nonNegative || $0 >= 0) }) else {
                throw TrainError("\(path): \(name) holds non-finite" + (nonNegative ? " or negative" : "") + " values")
            }
            return values
        }
        /// One component's adapters and moments.
        func restore(
            _ component: String, _ targets: [LoRAAdapters.Target],
            _ make: ([String: (a: [Float], b: [Float])]) throws -> LoRAAdapters
        ) throws -> (LoRAAdapters, AdamW) {
            var values: [String: (a: [Float], b: [Float])] = [:]
            var expAvg: [[Float]] = [], expAvgSq: [[Float]] = []
            for t in targets {
                let name = "\(component).\(t.module)"
                let shapes = [("lora_A", [o.rank, t.inFeatures]), ("lora_B", [t.outFeatures, o.rank])]
                values[t.module] = (
                    try floats("\(name).lora_A.weight", shapes[0].1),
                    try floats("\(name).lora_B.weight", shapes[1].1)
                )
                for (part, shape) in shapes {
                    expAvg.append(try floats("optimizer.exp_avg.\(name).\(part).weight", shape))
                    expAvgSq.append(try floats("optimizer.exp_avg_sq.\(name).\(part).weight", shape, nonNegative: true))
                }
            }
            let adapters: LoRAAdapters
            do { adapters = try make(values) } catch { throw TrainError("\(path): \(error)") }
            return (
                adapters, try AdamW(o.optimizer, step: optimizerStep, expAvg: expAvg, expAvgSq: expAvgSq, for: adapters)
            )
        }
        let (adapters, optimizer) = try restore("transformer", try LoRAAdapters.targets(config)) {
            try LoRAAdapters(config: config, rank: o.rank, alpha: o.alpha, values: $0)
        }
        var text: (adapters: LoRAAdapters, optimizer: AdamW)?
        if o.trainTextEncoder {
            guard let textConfig else {
                throw TrainError("\(path): the run trains the text encoder; its config is needed")
            }
            text = try restore("text_encoder", try LoRAAdapters.targets(textConfig)) {
                try LoRAAdapters(textConfig: textConfig, rank: o.rank, alpha: o.alpha, values: $0)
            }
        }
        guard let state = file.infos.first(where: { $0.name == "generator.state" }), state.dtype == .i64,
            state.shape == [625]
        else { throw TrainError("\(path): generator.state is missing or not I64 [625]") }
        let words = try file.tensor(named: "generator.state").int64s()
        guard words.allSatisfy({ $0 >= 0 && $0 <= Int64(UInt32.max) }),
            let generator = TorchGenerator(snapshot: words.map { UInt32($0) })
        else { throw TrainError("\(path): generator.state is not a generator state") }
        return FineTuneState(adapters: adapters, optimizer: optimizer, text: text, generator: generator, step: step)
    }
}
