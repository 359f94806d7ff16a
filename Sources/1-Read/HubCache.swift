// Checkpoints where diffusers users already have them: the local Hugging Face cache, as huggingface_hub leaves it
// (`<cache>/models--<org>--<name>/refs/<revision>` holding a commit, `snapshots/<commit>/…` whose files are symlinks
// into `blobs/`). Reading is offline; `HubDownload` (`amused download`) fills the same layout.

import AmusedCore
import Foundation

/// Resolves Hugging Face hub ids (`amused/amused-256`) to snapshot folders in the local cache.
public enum HubCache {
    /// The cache folder, in huggingface_hub's order: `HF_HUB_CACHE`, else the older `HUGGINGFACE_HUB_CACHE`, else
    /// `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (a leading `~` expanded).
    public static func root(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let user = environment["HOME"] ?? NSHomeDirectory()
        func value(_ name: String) -> String? {
            guard let v = environment[name], !v.isEmpty else { return nil }
            return v == "~" ? user : v.hasPrefix("~/") ? user + v.dropFirst() : v
        }
        if let cache = value("HF_HUB_CACHE") ?? value("HUGGINGFACE_HUB_CACHE") { return cache }
        if let home = value("HF_HOME") { return home + "/hub" }
        return (value("XDG_CACHE_HOME") ?? user + "/.cache") + "/huggingface/hub"
    }

    /// True when `text` reads as a hub model id (`org/name`, no other slashes) rather than a path.
    public static func isHubID(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 2
            && parts.allSatisfy { part in
                !part.isEmpty && part != "." && part != ".." && part.first != "."
                    && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
            }
    }

    /// `path` itself when it exists; otherwise, when it is a hub id, its cached snapshot folder for `revision`
    /// (a branch or tag name from `refs/`, or a commit hash).
    public static func resolve(_ path: String, revision: String? = nil, root: String = HubCache.root())
        throws(ReadError)
        -> String
    {
        if FileManager.default.fileExists(atPath: path) && revision == nil { return path }
        guard isHubID(path) else {
            if revision != nil {
                throw ReadError(.unsupported, path: path, field: "revision", "--revision applies to hub ids (org/name)")
            }
            return path  // not there: the reader names it
        }
        return try snapshot(id: path, revision: revision ?? "main", root: root)
    }

    /// The snapshot folder of `id` at `revision` in the cache at `root`.
    public static func snapshot(id: String, revision: String = "main", root: String = HubCache.root()) throws(ReadError)
        -> String
    {
        let fm = FileManager.default
        let repo = repositoryFolder(id, root: root)
        let fetch =
            "fetch it first (`amused download \(id)`, huggingface_hub's `huggingface-cli download \(id)` or "
            + "diffusers' from_pretrained), or point HF_HUB_CACHE / HF_HOME at the cache that has it"
        guard fm.fileExists(atPath: repo) else {
            throw ReadError(.io, path: id, "not in the Hugging Face cache (\(repo) does not exist): \(fetch)")
        }
        try checkRevisionName(revision, id: id)
        var commit = revision
        let isHash = revision.count == 40 && revision.allSatisfy(\.isHexDigit)
        if !isHash {
            let ref = repo + "/refs/" + revision
            guard let text = try? String(contentsOfFile: ref, encoding: .utf8) else {
                throw ReadError(
                    .io, path: id, field: "revision",
                    "revision \(revision) is not in the cache (no \(ref)): \(fetch) at that revision")
            }
            commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard commit.count == 40, commit.allSatisfy(\.isHexDigit) else {
                throw ReadError(.malformed, path: ref, field: "revision", "does not hold a commit hash")
            }
        }
        let snapshot = repo + "/snapshots/" + commit
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: snapshot, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ReadError(
                .io, path: id, field: "revision",
                "the cache names commit \(commit) but has no snapshot of it (\(snapshot)): \(fetch)")
        }
        return snapshot
    }

    /// `<root>/models--<org>--<name>`: where the cache keeps `id`.
    public static func repositoryFolder(_ id: String, root: String) -> String {
        root + "/models--" + id.replacingOccurrences(of: "/", with: "--")
    }

    /// Refuses a revision that is not a branch, tag or commit name (one that could leave `refs/`).
    static func checkRevisionName(_ revision: String, id: String) throws(ReadError) {
        guard !revision.isEmpty, revision.utf8.count <= 256,
            !revision.split(separator: "/", omittingEmptySubsequences: false).contains(where: {
                $0.isEmpty || $0 == ".." || $0 == "."
            }),
            revision.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_./".contains($0)) })
        else { throw ReadError(.malformed, path: id, field: "revision", "\"\(revision)\" is not a revision name") }
    }

    /// Creates `folder` and its parents when missing.
    static func ensureFolder(_ folder: String, id: String) throws(ReadError) {
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch { throw ReadError(.io, path: folder, "cannot create the folder for \(id): \(error)") }
    }

    /// The size of the regular file at `path` (links not followed), or nil.
    static func fileSize(_ path: String) -> Int? {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int(info.st_size)
    }
}
