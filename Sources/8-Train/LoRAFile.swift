// Writing what a fine-tune makes: the LoRA file, and the checkpoint that resumes a run.
//
// The LoRA file is what train_amused.py's save hook writes — `transformer.<module>.lora_A.weight` [r, in] and
// `…lora_B.weight` [out, r], float32 — plus the safetensors metadata entry diffusers ≥ 0.34 reads back as the PEFT
// LoraConfig (`lora_adapter_metadata`: {"transformer.r", "transformer.lora_alpha", "transformer.target_modules", and empty
// rank and alpha patterns}),
// so the scale alpha / r is recorded in the file: diffusers' load_lora_into_transformer and `amused generate --lora`
// both apply it, where files without it are reloaded at scale 1.
//
// A checkpoint is the same tensors plus AdamW's moments (`optimizer.exp_avg.<module>.lora_A.weight`, …), the
// generator's state and the step (metadata `amused_finetune`, with the options and what was trained on, so a resume
// with different settings is refused). Both are written atomically: a Ctrl-C leaves the previous file whole.

import AmusedModel
import AmusedRead
import AmusedTensors
import Foundation

/// The files a fine-tune writes and reads.
public enum LoRAFile {
    /// The safetensors metadata key diffusers stores the LoraConfig under.
    public static let adapterMetadataKey = "lora_adapter_metadata"
    /// The metadata key of a checkpoint's run state.
    public static let checkpointKey = "amused_finetune"

    /// The LoraConfig diffusers rebuilds: r, lora_alpha, target_modules, under the component prefix.
    static func adapterMetadata(_ lora: LoRAAdapters) -> String {
        let targets = LoRAAdapters.targetSuffixes.map { JSONValue.quote(String($0.dropFirst())) }.joined(separator: ", ")
        // json.dumps(…, indent=2, sort_keys=True) as diffusers writes it; any JSON object reads back the same.
        // diffusers builds LoraConfig(**fields) and reads rank_pattern and target_modules unconditionally.
        return "{\n  \"transformer.alpha_pattern\": {},\n  \"transformer.lora_alpha\": \(formatNumber(lora.alpha)),\n"
            + "  \"transformer.r\": \(lora.rank),\n  \"transformer.rank_pattern\": {},\n"
            + "  \"transformer.target_modules\": [\(targets)]\n}"
    }

    static func formatNumber(_ x: Float) -> String {
        x == x.rounded() && abs(x) < 1e7 ? String(Int(x)) : "\(x)"
    }

    static func loraTensors(_ lora: LoRAAdapters) throws -> [(name: String, tensor: Tensor)] {
        try lora.adapters.flatMap { a in
            [("transformer.\(a.module).lora_A.weight", try Tensor(floats: a.a, shape: [lora.rank, a.inFeatures])),
             ("transformer.\(a.module).lora_B.weight", try Tensor(floats: a.b, shape: [a.outFeatures, lora.rank]))]
        }
    }

    /// Writes `lora` as a diffusers/PEFT LoRA file at `path`, atomically, with its alpha recorded.
    public static func write(_ lora: LoRAAdapters, to path: String, note: String? = nil) throws {
        var metadata: [(String, String)] = [("format", "pt"), (adapterMetadataKey, adapterMetadata(lora))]
        if let note { metadata.append(("amused_note", note)) }
        try SafetensorsWriter.write(try loraTensors(lora), metadata: metadata, to: path)
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

        /// The identity of a run on `prompt` and the image with digest `imageSHA256`.
        public init(options: FineTuneOptions, prompt: String, imageSHA256: String, preservationPrompts: [String] = []) {
            self.options = options
            self.prompt = prompt
            self.imageSHA256 = imageSHA256
            self.preservationPrompts = preservationPrompts
        }
    }

    /// Writes a resumable checkpoint of `state` at `path`, atomically.
    public static func writeCheckpoint(_ state: FineTuneState, identity: RunIdentity, to path: String) throws {
        var tensors = try loraTensors(state.adapters)
        for (k, a) in state.adapters.adapters.enumerated() {
            for (slot, part, shape) in [(2 * k, "lora_A", [state.adapters.rank, a.inFeatures]),
                                        (2 * k + 1, "lora_B", [a.outFeatures, state.adapters.rank])] {
                tensors.append(("optimizer.exp_avg.\(a.module).\(part).weight",
                                try Tensor(floats: state.optimizer.expAvg[slot], shape: shape)))
                tensors.append(("optimizer.exp_avg_sq.\(a.module).\(part).weight",
                                try Tensor(floats: state.optimizer.expAvgSq[slot], shape: shape)))
            }
        }
        let snapshot = state.generator.snapshot.map(Int64.init)
        tensors.append(("generator.state", try Tensor(int64s: snapshot, shape: [snapshot.count])))
        let run = CheckpointRun(step: state.step, optimizerStep: state.optimizer.step, identity: identity)
        let runText = String(decoding: try encoder.encode(run), as: UTF8.self)
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt"), (adapterMetadataKey, adapterMetadata(state.adapters)),
                                                        (checkpointKey, runText)], to: path)
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
    /// one, or when it was made with a different model, options, prompt or image than `identity`.
    public static func readCheckpoint(path: String, config: UVit2DConfig, identity: RunIdentity) throws -> FineTuneState {
        let file = try SafetensorsFile(path: path)
        guard let runText = file.metadataValue(checkpointKey),
              let run = try? JSONDecoder().decode(CheckpointRun.self, from: Data(runText.utf8)),
              run.step >= 0, run.optimizerStep >= 0
        else {
            throw TrainError("\(path): not an AmusedKit fine-tune checkpoint (no valid `\(checkpointKey)` metadata); "
                             + "pass a file written by `amused finetune --checkpoint-every`")
        }
        let savedIdentity = run.identity, step = run.step, optimizerStep = run.optimizerStep
        if savedIdentity != identity {
            let what = savedIdentity.prompt != identity.prompt ? "prompt \"\(savedIdentity.prompt)\""
                : savedIdentity.imageSHA256 != identity.imageSHA256 ? "image (SHA-256 \(savedIdentity.imageSHA256.prefix(12))…)"
                : savedIdentity.preservationPrompts != identity.preservationPrompts ? "set of --preserve prompts"
                : "options"
            throw TrainError("\(path): the checkpoint was made with a different \(what); resume with the same "
                             + "--image, --prompt and options, or start a new run")
        }
        let o = identity.options
        var values: [String: (a: [Float], b: [Float])] = [:]
        var expAvg: [[Float]] = [], expAvgSq: [[Float]] = []
        func floats(_ name: String) throws -> [Float] {
            guard file.infos.contains(where: { $0.name == name }) else {
                throw TrainError("\(path): missing tensor \(name); the checkpoint is incomplete or for another model")
            }
            return try file.tensor(named: name).floats()
        }
        for t in try LoRAAdapters.targets(config) {
            values[t.module] = (try floats("transformer.\(t.module).lora_A.weight"),
                                try floats("transformer.\(t.module).lora_B.weight"))
            for part in ["lora_A", "lora_B"] {
                expAvg.append(try floats("optimizer.exp_avg.\(t.module).\(part).weight"))
                expAvgSq.append(try floats("optimizer.exp_avg_sq.\(t.module).\(part).weight"))
            }
        }
        let adapters: LoRAAdapters
        do { adapters = try LoRAAdapters(config: config, rank: o.rank, alpha: o.alpha, values: values) } catch {
            throw TrainError("\(path): \(error)")
        }
        let optimizer = try AdamW(o.optimizer, step: Int(optimizerStep), expAvg: expAvg, expAvgSq: expAvgSq, for: adapters)
        let words = try file.tensor(named: "generator.state").int64s()
        guard words.allSatisfy({ $0 >= 0 && $0 <= Int64(UInt32.max) }),
              let generator = TorchGenerator(snapshot: words.map { UInt32($0) })
        else { throw TrainError("\(path): generator.state is not a generator state") }
        guard step <= o.steps else {
            throw TrainError("\(path): the checkpoint is at step \(step), beyond --steps \(o.steps)")
        }
        return FineTuneState(adapters: adapters, optimizer: optimizer, generator: generator, step: step)
    }
}
