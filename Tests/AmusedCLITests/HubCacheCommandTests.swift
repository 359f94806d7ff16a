// A model named by its hub id resolves from the local Hugging Face cache, laid out as huggingface_hub leaves it
// (refs/<revision> → snapshots/<commit>/… symlinks into blobs/), for every command; what is missing is named with
// how to fetch it; `amused download` fills that cache from a hub (here a stand-in on loopback).

import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

/// A cache at `root` holding the tiny-256 pipeline as `amused/tiny-256` at one commit, refs `main` and `v1`.
func makeHubCache(_ root: String) throws -> String {
    let fm = FileManager.default
    let model = FixturePaths.path("records/tiny-256/model")
    let repo = root + "/models--amused--tiny-256"
    let commit = "0123456789abcdef0123456789abcdef01234567"
    let snapshot = repo + "/snapshots/" + commit
    try fm.createDirectory(atPath: repo + "/blobs", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: repo + "/refs", withIntermediateDirectories: true)
    for case let relative as String in fm.enumerator(atPath: model)! {
        var isDirectory: ObjCBool = false
        _ = fm.fileExists(atPath: model + "/" + relative, isDirectory: &isDirectory)
        if isDirectory.boolValue { continue }
        let data = try Data(contentsOf: URL(fileURLWithPath: model + "/" + relative))
        let blob = "blob-" + relative.replacingOccurrences(of: "/", with: "-")
        try data.write(to: URL(fileURLWithPath: repo + "/blobs/" + blob))
        let link = snapshot + "/" + relative
        try fm.createDirectory(atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let depth = relative.split(separator: "/").count + 1  // up to the repo folder, as huggingface_hub links
        try fm.createSymbolicLink(
            atPath: link,
            withDestinationPath:
                String(repeating: "../", count: depth) + "blobs/" + blob)
    }
    try Data(commit.utf8).write(to: URL(fileURLWithPath: repo + "/refs/main"))
    try Data(commit.utf8).write(to: URL(fileURLWithPath: repo + "/refs/v1"))
    return snapshot
}

@Suite("hub ids from the local Hugging Face cache", .serialized)
struct HubCacheCommandTests {
    @Test func everyCommandResolvesAHubID() throws {
        let scratch = try ScratchFolder()
        let snapshot = try makeHubCache(scratch.path + "/hub")
        let env = ["HF_HUB_CACHE": scratch.path + "/hub"]
        let inspect = try runAmused(["inspect", "amused/tiny-256", "--json"], environment: env)
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(inspect.stdout.utf8))
        #expect(report["layout"]?.stringValue == "pipeline")
        #expect(report["path"]?.stringValue == snapshot)
        // HF_HOME/hub is the next place looked, and a tag resolves like a branch.
        let tagged = try runAmused(
            ["inspect", "amused/tiny-256", "--revision", "v1"], environment: ["HF_HOME": scratch.path])
        #expect(tagged.status == 0, "\(tagged.stderr)")
        // verify and generate run from the snapshot, seed for seed with the record made from the same files.
        let verify = try runAmused(
            ["verify", "amused/tiny-256", "--reference", FixturePaths.path("records/tiny-256")],
            environment: env)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let image = scratch.path + "/cat.png"
        let generate = try runAmused(
            [
                "generate", "--model", "amused/tiny-256", "--prompt", "a photo of a cat",
                "--out", image,
            ], environment: env)
        #expect(generate.status == 0 && FileManager.default.fileExists(atPath: image), "\(generate.stderr)")
    }

    @Test func whatIsMissingIsNamedWithHowToFetchIt() throws {
        let scratch = try ScratchFolder()
        _ = try makeHubCache(scratch.path + "/hub")
        let env = ["HF_HUB_CACHE": scratch.path + "/hub"]
        let missing = try runAmused(["inspect", "amused/amused-512"], environment: env)
        #expect(missing.status == 1)
        #expect(
            missing.stderr.contains("amused/amused-512: not in the Hugging Face cache")
                && missing.stderr.contains("huggingface-cli download amused/amused-512"), "\(missing.stderr)")
        let revision = try runAmused(
            ["convert", "amused/tiny-256", "--revision", "v2", "--out", scratch.path + "/x.amused"],
            environment: env)
        #expect(revision.status == 1)
        #expect(revision.stderr.contains("revision v2 is not in the cache"), "\(revision.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/x.amused"))
    }

    /// `amused download` fills the cache from the hub HF_ENDPOINT names, prints the snapshot folder, and every
    /// command then runs the model by its id; a file whose bytes do not match the hub's checksum fails the command
    /// (exit 1, naming the file) and leaves nothing in the snapshot.
    @Test func downloadFillsTheCacheEveryCommandReads() throws {
        let scratch = try ScratchFolder()
        let hub = try LocalHub(id: "someone/tiny", folder: FixturePaths.path("records/tiny-256/model"))
        let env = ["HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": scratch.path + "/hub"]
        let download = try runAmused(["download", "someone/tiny"], environment: env)
        #expect(download.status == 0, "\(download.stderr)")
        let snapshot = scratch.path + "/hub/models--someone--tiny/snapshots/" + hub.commit
        #expect(download.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == snapshot)
        let verify = try runAmused(
            ["verify", "someone/tiny", "--reference", FixturePaths.path("records/tiny-256")], environment: env)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")

        let broken = try LocalHub(id: "someone/other", folder: FixturePaths.path("records/tiny-256/model"))
        broken.corrupt("vqvae/diffusion_pytorch_model.safetensors")
        let failed = try runAmused(
            ["download", "someone/other"],
            environment: ["HF_ENDPOINT": broken.endpoint, "HF_HUB_CACHE": scratch.path + "/hub"])
        #expect(failed.status == 1)
        #expect(
            failed.stderr.contains("vqvae/diffusion_pytorch_model.safetensors")
                && failed.stderr.contains("SHA-256"), "\(failed.stderr)")
        #expect(
            !FileManager.default.fileExists(
                atPath: scratch.path + "/hub/models--someone--other/snapshots/" + hub.commit
                    + "/vqvae/diffusion_pytorch_model.safetensors"))
    }
}
