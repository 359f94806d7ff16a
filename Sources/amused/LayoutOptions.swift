// `--layout` and `--configs`, shared by the commands that open a checkpoint.

import AmusedRead
import ArgumentParser

extension Checkpoint.Layout: ExpressibleByArgument {}

/// How to read a checkpoint whose layout detection needs help.
struct LayoutOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Force the checkpoint layout instead of detecting it (an error when the files do not fit).",
            valueName: "pipeline|component|file|open-muse|single-file"))
    var layout: Checkpoint.Layout?

    @Option(
        help: ArgumentHelp(
            "A diffusers pipeline folder whose configs, tokenizer and scheduler a single-file "
                + "checkpoint (transformer./vqvae./text_encoder. prefixes) uses.", valueName: "dir"))
    var configs: String?

    @Option(
        help: ArgumentHelp(
            "With a hub id (org/name) for the model: the revision in the local Hugging Face cache "
                + "(a branch, tag or commit; default main).", valueName: "rev"))
    var revision: String?

    /// `model` itself, or — for a hub id such as amused/amused-256 — its snapshot folder in the local Hugging Face
    /// cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub), at `--revision`.
    func resolve(_ model: String) throws -> String {
        try reportingErrors { try HubCache.resolve(model, revision: revision) }
    }
}
