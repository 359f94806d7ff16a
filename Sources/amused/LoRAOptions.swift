// `--lora FILE --lora-scale S`, shared by the commands that run the model.

import AmusedBind
import ArgumentParser
import Foundation

/// The LoRA options of `generate` and `verify`.
struct LoRAOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "A LoRA file (diffusers/PEFT pytorch_lora_weights.safetensors) to fuse into the "
                + "transformer and text encoder.", valueName: "file"))
    var lora: String?

    @Option(
        help: ArgumentHelp(
            "Scale of the LoRA update, times alpha / r when the file records alpha (files from "
                + "amused finetune do). train_amused.py's files store no alpha: 1.0 is what diffusers "
                + "uses on reload; training with its defaults used 2.0 (alpha 32 / r 16).",
            valueName: "scale"))
    var loraScale: Float = 1

    func validate() throws {
        if !loraScale.isFinite { throw ValidationError("--lora-scale must be a finite number") }
        if lora == nil && loraScale != 1 { throw ValidationError("--lora-scale needs --lora") }
    }

    /// The parsed LoRA, after printing on stderr which scale is used and why.
    func fusion() throws -> LoRAFusion? {
        guard let lora else { return nil }
        let parsed = try LoRA(path: lora)
        FileHandle.standardError.write(Data(("note: " + parsed.scaleNote(scale: loraScale) + "\n").utf8))
        return LoRAFusion(parsed, scale: loraScale)
    }
}
