// `amused download ID`: fills the local Hugging Face cache (as huggingface_hub does) so that every command — and
// diffusers — finds the model by its hub id.

import AmusedRead
import ArgumentParser
import Foundation

struct Download: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a model from the Hugging Face hub into the local Hugging Face cache.",
        discussion: """
            Writes the cache layout huggingface_hub writes (HF_HUB_CACHE, else HF_HOME/hub, else \
            ~/.cache/huggingface/hub): blobs named by the hub's checksum, a snapshot folder of symbolic links per \
            commit, refs/<revision>. Every file is checked against the hub's SHA-256 (LFS files) or git blob SHA-1 \
            before it enters the cache; a broken download is resumed (in this run, or by running the command \
            again). HF_ENDPOINT selects another hub or mirror; HF_TOKEN is sent for gated and private repositories. \
            Afterwards every command takes the hub id as its model (amused generate --model ID …).
            """)

    @Argument(help: "The repository, as org/name (for example amused/amused-256).")
    var id: String

    @Option(help: ArgumentHelp("A branch, tag or commit.", valueName: "rev"))
    var revision = "main"

    @Option(help: "Choose variant weight files, e.g. 'fp16' for *.fp16.safetensors (default: the plain ones).")
    var variant: String?

    @Option(
        help: ArgumentHelp(
            "Only files matching this pattern (fnmatch; '*' also matches '/'); repeatable.", valueName: "pattern"))
    var include: [String] = []

    func run() throws {
        var options = HubDownload.Options()
        options.revision = revision
        options.variant = variant
        options.include = include
        options.userAgent = "amused/\(AmusedVersion.toolkit)"
        let bar = ProgressBar(unit: "MB", every: 0)
        var shown = -1
        let snapshot = try reportingErrors {
            try HubDownload.download(id, options: options) { done, total, file in
                let mb = done >> 20
                guard mb != shown || done == total else { return }
                shown = mb
                let whole = max(total >> 20, 1)
                bar.update(done == total ? whole : min(mb, whole), whole, suffix: " " + file)
            }
        }
        print(snapshot)
    }
}
