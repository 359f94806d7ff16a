// `amused download`'s library side against a hub on loopback (AmusedTestSupport's LocalHub, serving the tiny-256
// pipeline folder as the hub serves a repository): the cache layout huggingface_hub writes, the checksums, resuming a
// broken connection (in the same run and in the next), a wrong checksum, a gated repository, a hostile file list, and
// the variant choice diffusers makes.

import AmusedCore
import AmusedTestSupport
import Foundation
import Testing

@testable import AmusedRead

@Suite("hub download")
struct HubDownloadTests {
    static let model = FixturePaths.path("records/tiny-256/model")
    static let weights = "transformer/diffusion_pytorch_model.safetensors"

    func options(_ hub: LocalHub, _ scratch: ScratchFolder) -> HubDownload.Options {
        var options = HubDownload.Options(environment: ["HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": scratch.path])
        options.timeout = 20
        return options
    }

    /// Files requested from the CDN (LFS bodies), in order.
    func cdnRequests(_ hub: LocalHub) -> [String] { hub.log.filter { $0.hasPrefix("GET /cdn/") } }

    @Test func fillsTheCacheAsHuggingFaceHubDoes() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let scratch = try ScratchFolder()
        let snapshot = try HubDownload.download("someone/tiny", options: options(hub, scratch))
        let repo = scratch.path + "/models--someone--tiny"
        #expect(snapshot == repo + "/snapshots/" + hub.commit)
        #expect(try String(contentsOfFile: repo + "/refs/main", encoding: .utf8) == hub.commit)
        let chosen = hub.files.filter { !$0.path.contains(".fp16.") }
        for file in chosen {
            let link = snapshot + "/" + file.path
            let depth = file.path.split(separator: "/").count - 1
            // A relative link into blobs/, named by the hub's checksum, with the served bytes.
            #expect(
                try FileManager.default.destinationOfSymbolicLink(atPath: link)
                    == String(repeating: "../", count: depth + 2) + "blobs/" + file.etag)
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: link))) == file.bytes, "\(file.path)")
        }
        // The plain weights, not the fp16 variant, and nothing left half-written.
        #expect(
            !FileManager.default.fileExists(atPath: snapshot + "/transformer/diffusion_pytorch_model.fp16.safetensors"))
        let blobs = try FileManager.default.contentsOfDirectory(atPath: repo + "/blobs")
        #expect(Set(blobs) == Set(chosen.map(\.etag)))
        // Every command finds it by its id now.
        #expect(try HubCache.resolve("someone/tiny", root: scratch.path) == snapshot)
        let source = try openWeights(path: snapshot + "/" + Self.weights)
        #expect(!source.names.isEmpty)
        // A second run checks, finds every blob in place and downloads nothing.
        let before = cdnRequests(hub).count
        try HubDownload.download("someone/tiny", options: options(hub, scratch))
        #expect(cdnRequests(hub).count == before)
    }

    @Test func choosesTheVariantAndFilesAsked() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let scratch = try ScratchFolder()
        var options = options(hub, scratch)
        options.variant = "fp16"
        options.include = ["transformer/*", "model_index.json"]
        let snapshot = try HubDownload.download("someone/tiny", options: options)
        let got = Set(FileManager.default.enumerator(atPath: snapshot)!.compactMap { $0 as? String })
        #expect(
            got == [
                "model_index.json", "transformer", "transformer/config.json",
                "transformer/diffusion_pytorch_model.fp16.safetensors",
            ])
    }

    /// diffusers' choice on a listing like the released amused-256: the variant where there is one, safetensors
    /// over .bin, other variants left out.
    @Test func variantChoiceFollowsDiffusers() {
        let listing = [
            "model_index.json", "text_encoder/config.json", "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin",
            "vqvae/diffusion_pytorch_model.bin",
            "vqvae/diffusion_pytorch_model.fp16.bin", "unet/only.fp16.safetensors", "README.md",
        ]
        #expect(
            HubDownload.select(listing, variant: nil, include: [])
                == [
                    "model_index.json", "text_encoder/config.json", "text_encoder/model.safetensors",
                    "vqvae/diffusion_pytorch_model.bin", "unet/only.fp16.safetensors", "README.md",
                ])
        #expect(
            HubDownload.select(listing, variant: "fp16", include: [])
                == [
                    "model_index.json", "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
                    "vqvae/diffusion_pytorch_model.fp16.bin", "unet/only.fp16.safetensors", "README.md",
                ])
        #expect(
            HubDownload.select(listing, variant: nil, include: ["*.json"]) == [
                "model_index.json", "text_encoder/config.json",
            ])
    }

    @Test func resumesAConnectionThatBreaks() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let file = try #require(hub.files.first { $0.path == Self.weights })
        hub.breakDownloads(of: Self.weights, after: 5000, times: 2)
        let scratch = try ScratchFolder()
        let snapshot = try HubDownload.download("someone/tiny", options: options(hub, scratch))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: snapshot + "/" + Self.weights))) == file.bytes)
        // The first request from 0, then resumed where the bytes stopped (the server had sent 5000 per attempt).
        let requests = cdnRequests(hub).filter { $0.contains(file.etag) }
        #expect(requests.count == 3, "\(requests)")
        #expect(!requests[0].contains("range=") && requests[1].hasSuffix("range=bytes=5000-"))
        #expect(requests[2].hasSuffix("range=bytes=10000-"))
    }

    @Test func aDownloadThatKeepsBreakingIsResumedByTheNextRun() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let file = try #require(hub.files.first { $0.path == Self.weights })
        hub.breakDownloads(of: Self.weights, after: 3000, times: 100)
        let scratch = try ScratchFolder()
        var options = options(hub, scratch)
        options.attempts = 2
        let error = try #require(throws: ReadError.self) { try HubDownload.download("someone/tiny", options: options) }
        #expect(error.family == .truncated && "\(error)".contains(Self.weights), "\(error)")
        #expect("\(error)".contains("run the same command again"), "\(error)")
        let repo = scratch.path + "/models--someone--tiny"
        // What arrived is kept for the next run; nothing of this file is in the cache or the snapshot.
        let partial = try FileManager.default.attributesOfItem(atPath: repo + "/blobs/" + file.etag + ".incomplete")
        #expect((partial[.size] as? Int) == 6000)
        #expect(!FileManager.default.fileExists(atPath: repo + "/blobs/" + file.etag))
        #expect(!FileManager.default.fileExists(atPath: repo + "/snapshots/" + hub.commit + "/" + Self.weights))
        hub.breakDownloads(of: Self.weights, after: 0, times: 0)
        let snapshot = try HubDownload.download("someone/tiny", options: options)
        #expect(cdnRequests(hub).filter { $0.contains(file.etag) }.last?.hasSuffix("range=bytes=6000-") == true)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: snapshot + "/" + Self.weights))) == file.bytes)
    }

    @Test func aWrongChecksumKeepsNothing() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let file = try #require(hub.files.first { $0.path == Self.weights })
        hub.corrupt(Self.weights)
        let scratch = try ScratchFolder()
        let error = try #require(throws: ReadError.self) {
            try HubDownload.download("someone/tiny", options: options(hub, scratch))
        }
        #expect(error.family == .integrity, "\(error)")
        #expect("\(error)".contains(Self.weights) && "\(error)".contains(file.etag), "\(error)")
        let repo = scratch.path + "/models--someone--tiny"
        #expect(!FileManager.default.fileExists(atPath: repo + "/blobs/" + file.etag))
        #expect(!FileManager.default.fileExists(atPath: repo + "/blobs/" + file.etag + ".incomplete"))
        #expect(!FileManager.default.fileExists(atPath: repo + "/snapshots/" + hub.commit + "/" + Self.weights))
        #expect(!FileManager.default.fileExists(atPath: repo + "/refs/main"))
    }

    @Test func aGatedRepositoryNeedsTheToken() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        hub.requireToken("hf_secret")
        let scratch = try ScratchFolder()
        var options = options(hub, scratch)
        let error = try #require(throws: ReadError.self) { try HubDownload.download("someone/tiny", options: options) }
        #expect(error.family == .forbidden && "\(error)".contains("HF_TOKEN"), "\(error)")
        options = HubDownload.Options(
            environment: ["HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": scratch.path, "HF_TOKEN": "hf_secret"])
        try HubDownload.download("someone/tiny", options: options)
    }

    /// The token goes to the hub, never to a CDN on another origin the hub redirects to.
    @Test func theTokenStaysWithTheHub() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        hub.requireToken("hf_secret")
        hub.cdnHost = "localhost"
        let scratch = try ScratchFolder()
        var options = HubDownload.Options(
            environment: ["HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": scratch.path, "HF_TOKEN": "hf_secret"])
        options.include = [Self.weights]
        let snapshot = try HubDownload.download("someone/tiny", options: options)
        #expect(FileManager.default.fileExists(atPath: snapshot + "/" + Self.weights))
        let cdn = cdnRequests(hub), api = hub.log.filter { $0.hasPrefix("GET /api/") }
        #expect(!cdn.isEmpty && cdn.allSatisfy { !$0.hasSuffix(" auth") }, "\(hub.log)")
        #expect(!api.isEmpty && api.allSatisfy { $0.hasSuffix(" auth") }, "\(hub.log)")
    }

    /// A CDN that is busy for a moment (503, then 429) is asked again; a partial file an earlier run left complete but
    /// wrong is fetched again from byte 0 in the same run.
    @Test func busyServersAndWrongPartialsAreRetried() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let file = try #require(hub.files.first { $0.path == Self.weights })
        hub.refuseDownloads(of: Self.weights, status: 503, times: 1)
        let scratch = try ScratchFolder()
        let repo = scratch.path + "/models--someone--tiny"
        try FileManager.default.createDirectory(atPath: repo + "/blobs", withIntermediateDirectories: true)
        let vq = try #require(hub.files.first { $0.path == "vqvae/diffusion_pytorch_model.safetensors" })
        try Data(repeating: 1, count: vq.bytes.count).write(
            to: URL(fileURLWithPath: repo + "/blobs/" + vq.etag + ".incomplete"))
        let snapshot = try HubDownload.download("someone/tiny", options: options(hub, scratch))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: snapshot + "/" + Self.weights))) == file.bytes)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: snapshot + "/" + vq.path))) == vq.bytes)
        #expect(cdnRequests(hub).filter { $0.contains(file.etag) }.count == 2)
    }

    /// A branch with slashes (a pull request's refs/pr/1) is written where huggingface_hub writes it; a partial file
    /// longer than the file (left by another version of it) is started over from byte 0.
    @Test func branchesWithSlashesAndStalePartials() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        hub.branches = ["main", "refs/pr/1"]
        let file = try #require(hub.files.first { $0.path == Self.weights })
        let scratch = try ScratchFolder()
        let repo = scratch.path + "/models--someone--tiny"
        try FileManager.default.createDirectory(atPath: repo + "/blobs", withIntermediateDirectories: true)
        try Data(repeating: 7, count: file.bytes.count + 100).write(
            to: URL(fileURLWithPath: repo + "/blobs/" + file.etag + ".incomplete"))
        var options = options(hub, scratch)
        options.revision = "refs/pr/1"
        let snapshot = try HubDownload.download("someone/tiny", options: options)
        #expect(try String(contentsOfFile: repo + "/refs/refs/pr/1", encoding: .utf8) == hub.commit)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: snapshot + "/" + Self.weights))) == file.bytes)
        #expect(try HubCache.resolve("someone/tiny", revision: "refs/pr/1", root: scratch.path) == snapshot)
    }

    @Test func aHostileFileListWritesNothing() throws {
        for name in ["../../../escaped", "/etc/passwd", "a//b", "./x", "a\\b", "x\u{1}y"] {
            let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
            hub.list(
                name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\u{1}", with: "\\u0001"))
            let scratch = try ScratchFolder()
            let error = try #require(throws: ReadError.self) {
                try HubDownload.download("someone/tiny", options: options(hub, scratch))
            }
            #expect(error.family == .forbidden && error.field?.hasPrefix("siblings[") == true, "\(name): \(error)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty, "\(name)")
        }
    }

    /// The cache is where huggingface_hub (and so diffusers) looks for it, variable by variable.
    @Test func theCacheIsWhereHuggingFaceHubLooks() {
        let home = ["HOME": "/u"]
        #expect(HubCache.root(home) == "/u/.cache/huggingface/hub")
        #expect(HubCache.root(home.merging(["XDG_CACHE_HOME": "/x"]) { $1 }) == "/x/huggingface/hub")
        #expect(HubCache.root(home.merging(["XDG_CACHE_HOME": "/x", "HF_HOME": "~/hf"]) { $1 }) == "/u/hf/hub")
        #expect(HubCache.root(home.merging(["HF_HOME": "/h", "HUGGINGFACE_HUB_CACHE": "/old"]) { $1 }) == "/old")
        #expect(
            HubCache.root(home.merging(["HUGGINGFACE_HUB_CACHE": "/old", "HF_HUB_CACHE": "/new"]) { $1 }) == "/new")
    }

    /// A renamed repository answers with relative redirects; both RFC 3986 forms are followed to the same bytes.
    @Test(arguments: [false, true]) func renamedRepositoriesAreFollowed(dotRelative: Bool) throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        hub.renamed(from: "someone/old-name", dotRelative: dotRelative)
        let scratch = try ScratchFolder()
        let snapshot = try HubDownload.download("someone/old-name", options: options(hub, scratch))
        let got = try Data(contentsOf: URL(fileURLWithPath: snapshot + "/" + Self.weights))
        let want = try Data(contentsOf: URL(fileURLWithPath: Self.model + "/" + Self.weights))
        #expect(got == want)
        #expect(hub.log.contains { $0.hasPrefix("HEAD /someone/tiny/resolve/") })
    }

    /// Relative redirects resolve as RFC 3986 says (its section 5.4 examples' forms); another host is not followed.
    @Test func relativeRedirectTargets() {
        let from = "https://hub.example/org/old/resolve/c0ffee/unet/config.json"
        #expect(
            HubDownload.sameHostTarget("/org/new/resolve/c0ffee/unet/config.json", from: from)
                == "https://hub.example/org/new/resolve/c0ffee/unet/config.json")
        #expect(
            HubDownload.sameHostTarget("other.json", from: from)
                == "https://hub.example/org/old/resolve/c0ffee/unet/other.json")
        #expect(
            HubDownload.sameHostTarget("../../../../new/resolve/c0ffee/a", from: from)
                == "https://hub.example/org/new/resolve/c0ffee/a")
        for away in ["https://cdn.example/x", "//cdn.example/x", ""] {
            #expect(HubDownload.sameHostTarget(away, from: from) == nil, "\(away)")
        }
    }

    @Test func unknownRepositoriesAndRevisionsSayWhatIsMissing() throws {
        let hub = try LocalHub(id: "someone/tiny", folder: Self.model)
        let scratch = try ScratchFolder()
        var options = options(hub, scratch)
        options.revision = "v9"
        let error = try #require(throws: ReadError.self) { try HubDownload.download("someone/tiny", options: options) }
        #expect("\(error)".contains("HTTP 404") && "\(error)".contains("--revision"), "\(error)")
        options.revision = "../x"
        let bad = try #require(throws: ReadError.self) { try HubDownload.download("someone/tiny", options: options) }
        #expect(bad.field == "revision", "\(bad)")
        #expect(throws: ReadError.self) { try HubDownload.download("not-an-id", options: options) }
    }
}
