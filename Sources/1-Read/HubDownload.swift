// `amused download`: fills the local Hugging Face cache the way huggingface_hub fills it, so diffusers finds the files
// too (and every amused command, through HubCache): `blobs/<etag>`, `snapshots/<commit>/<path>` a relative symlink to
// `../../blobs/<etag>`, `refs/<revision>` holding the commit, and `<cache>/.locks/models--org--name/<etag>.lock`
// flocked while a blob is written (huggingface_hub takes the same lock, so the two never write one blob at once).
//
// Every file is checked against the hub's own checksum before it enters the cache: the ETag of an LFS file is the
// SHA-256 of its content, that of any other file the git blob SHA-1 (`blob <size>\0<content>`). A file is written to
// `blobs/<etag>.incomplete`, resumed with an HTTP Range request after a broken connection (in this run or the next,
// as huggingface_hub resumes), and renamed into place only when whole and checked. Everything the server says is
// untrusted: file names may not leave the snapshot, ETags must be hex digests, sizes are bounded by what was announced.

import AmusedCore
import Crypto
import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Downloads a hub repository into the local Hugging Face cache.
public enum HubDownload {
    /// What to download and from where.
    public struct Options: Sendable {
        /// Branch, tag or commit (default `main`).
        public var revision = "main"
        /// Weight variant to choose (`fp16` for `*.fp16.safetensors`); without one, the plain weights.
        public var variant: String?
        /// Only files matching one of these `fnmatch` patterns (`*` also matches `/`, as in huggingface_hub); all
        /// when empty.
        public var include: [String] = []
        /// The hub: `HF_ENDPOINT`, else https://huggingface.co.
        public var endpoint: String
        /// A token for gated and private repositories: `HF_TOKEN`.
        public var token: String?
        /// The cache folder (`HubCache.root`).
        public var root: String
        /// Attempts per file after a broken connection (each resumes where the last stopped).
        public var attempts = 4
        /// Seconds without data before a request counts as broken.
        public var timeout: Double = 60
        /// The User-Agent sent.
        public var userAgent = "amused"

        /// Options from `environment` (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE`, `HF_HOME`).
        public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
            let endpoint = environment["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://huggingface.co"
            self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
            self.token = environment["HF_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            self.root = HubCache.root(environment)
        }
    }

    /// One file of the repository as the hub lists it.
    public struct RemoteFile: Sendable, Equatable {
        /// Path inside the repository.
        public let path: String
        /// The hub's checksum: a SHA-256 (LFS files) or git blob SHA-1, in hex.
        public let etag: String
        /// Size in bytes.
        public let size: Int
    }

    /// Largest API answer read (the file list of a repository).
    static let maxListing = 16 << 20
    /// Largest file size believed from the hub (256 TiB): sums of sizes can then never overflow.
    static let maxFileSize = 1 << 48

    /// Downloads `id` at `options.revision` into the cache and returns the snapshot folder. `progress` is called with
    /// bytes done, bytes in all and the file being fetched.
    @discardableResult
    public static func download(
        _ id: String, options: Options, progress: (_ done: Int, _ total: Int, _ file: String) -> Void = { _, _, _ in }
    ) throws(ReadError) -> String {
        guard HubCache.isHubID(id) else {
            throw ReadError(.unsupported, path: id, "not a hub id (org/name)")
        }
        try HubCache.checkRevisionName(options.revision, id: id)
        let client = HTTPClient(options: options)
        let (commit, listed) = try listing(id, options: options, client: client)
        let chosen = select(listed, variant: options.variant, include: options.include)
        guard !chosen.isEmpty else {
            throw ReadError(
                .io, path: id,
                "no file of \(id) at \(options.revision) matches "
                    + (options.include.isEmpty ? "" : "--include \(options.include.joined(separator: " ")) and ")
                    + "the variant chosen; the repository lists \(listed.count) files")
        }
        let repo = HubCache.repositoryFolder(id, root: options.root)
        let files = try chosen.map { path throws(ReadError) in
            try describe(id, commit: commit, path: path, client: client)
        }
        let total = files.reduce(0) { $0 + $1.size }
        var done = 0
        for file in files {
            try fetch(file, id: id, commit: commit, repo: repo, client: client, options: options) { bytes in
                progress(done + bytes, total, file.path)
            }
            done += file.size
            try link(file, commit: commit, repo: repo, id: id)
            progress(done, total, file.path)
        }
        if options.revision != commit {
            // A branch may hold slashes (refs/pr/1): its file sits in folders under refs/, as huggingface_hub puts it.
            let ref = repo + "/refs/" + options.revision
            try HubCache.ensureFolder((ref as NSString).deletingLastPathComponent, id: id)
            try writeAtomically(Array(commit.utf8), to: ref, id: id)
        }
        return repo + "/snapshots/" + commit
    }

    /// The commit `revision` names and the repository's file list (`GET /api/models/<id>/revision/<revision>`).
    static func listing(_ id: String, options: Options, client: HTTPClient) throws(ReadError) -> (String, [String]) {
        let url = options.endpoint + "/api/models/" + id + "/revision/" + percentEncoded(options.revision)
        let response = try client.get(url, path: id, limit: maxListing)
        try check(response, id: id, what: "the file list of \(id) at \(options.revision)", url: url)
        let json = try StrictJSONParser(path: url).parse(response.body)
        guard let commit = json["sha"]?.stringValue, commit.count == 40, commit.allSatisfy(\.isHexDigit) else {
            throw ReadError(.malformed, path: url, field: "sha", "the hub's answer has no commit hash")
        }
        guard let siblings = json["siblings"]?.arrayValue else {
            throw ReadError(.malformed, path: url, field: "siblings", "the hub's answer has no file list")
        }
        var paths: [String] = []
        for (i, sibling) in siblings.enumerated() {
            guard let path = sibling["rfilename"]?.stringValue else {
                throw ReadError(.malformed, path: url, field: "siblings[\(i)].rfilename", "missing")
            }
            guard isSafeRelativePath(path) else {
                throw ReadError(
                    .forbidden, path: url, field: "siblings[\(i)].rfilename",
                    "\"\(path)\" would leave the snapshot folder (absolute, empty, '.', '..' or a control character)")
            }
            paths.append(path)
        }
        return (commit.lowercased(), paths)
    }

    /// True for a relative path of plain components: no empty, `.` or `..` component, no backslash or control
    /// character, at most 4096 bytes.
    static func isSafeRelativePath(_ path: String) -> Bool {
        !path.isEmpty && path.utf8.count <= 4096 && !path.hasPrefix("/")
            && !path.unicodeScalars.contains { $0.value < 0x20 || $0 == "\\" || $0.value == 0x7F }
            && path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy {
                !$0.isEmpty && $0 != "." && $0 != ".."
            }
    }

    /// The files to fetch: those matching `include` (all when empty), with weights (`.safetensors`, `.bin`) chosen
    /// as diffusers chooses them — the `variant`'s file where one exists (`model.fp16.safetensors` for `fp16`), else
    /// the plain one; without a variant, the plain file where one exists; no `.bin` in a folder with safetensors.
    public static func select(_ paths: [String], variant: String?, include: [String]) -> [String] {
        let all = Set(paths)
        func parts(_ path: String) -> (plain: String, variant: String?, ext: String)? {
            for ext in [".safetensors", ".bin"] where path.hasSuffix(ext) {
                let stem = path.dropLast(ext.count)
                let name = stem.split(separator: "/").last ?? stem
                if let dot = name.lastIndex(of: "."), dot != name.startIndex {
                    let plain = String(stem[..<dot]) + ext
                    return (plain, String(name[name.index(after: dot)...]), ext)
                }
                return (path, nil, ext)
            }
            return nil
        }
        let kept = paths.filter { path in
            guard let p = parts(path) else { return true }
            if let v = p.variant {
                // A variant file: kept when it is the one asked for, or when no plain file stands beside it.
                return v == variant || (!all.contains(p.plain) && variant == nil)
            }
            // A plain file: dropped when the asked-for variant stands beside it.
            guard let variant else { return true }
            let stem = path.dropLast(p.ext.count)
            return !all.contains(stem + "." + variant + p.ext)
        }
        func folder(_ path: String) -> Substring { path.lastIndex(of: "/").map { path[..<$0] } ?? "" }
        let safetensorsFolders = Set(kept.filter { $0.hasSuffix(".safetensors") }.map(folder))
        return kept.filter { path in
            // A component with safetensors weights needs no .bin (diffusers and transformers load the safetensors).
            if path.hasSuffix(".bin") && safetensorsFolders.contains(folder(path)) { return false }
            return include.isEmpty || include.contains { fnmatch($0, path, 0) == 0 }
        }
    }

    /// The hub's checksum and size of one file (`HEAD /<id>/resolve/<commit>/<path>`, redirects not followed: an LFS
    /// file's answer carries `X-Linked-Etag` and `X-Linked-Size`; a repository renamed since answers with a relative
    /// redirect, which is followed).
    static func describe(_ id: String, commit: String, path: String, client: HTTPClient) throws(ReadError)
        -> RemoteFile
    {
        var url =
            client.options.endpoint + "/" + id + "/resolve/" + commit + "/" + percentEncoded(path, keepSlash: true)
        for _ in 0..<5 {
            let response = try client.head(url, path: path)
            if (300..<400).contains(response.status), let location = response.header("location"),
                let next = sameHostTarget(location, from: url)
            {
                url = next
                continue
            }
            guard (200..<400).contains(response.status) else {
                try check(response, id: id, what: path, url: url)
                break
            }
            let raw = response.header("x-linked-etag") ?? response.header("etag") ?? ""
            let etag = normalizedETag(raw)
            guard etag.count == 64 || etag.count == 40, etag.allSatisfy(\.isHexDigit) else {
                throw ReadError(
                    .unsupported, path: url, field: "ETag",
                    "the hub gave no checksum this can check (\"\(raw)\"); nothing was written")
            }
            guard let sizeText = response.header("x-linked-size") ?? response.header("content-length"),
                let size = Int(sizeText), size >= 0, size <= maxFileSize
            else {
                throw ReadError(.malformed, path: url, field: "X-Linked-Size", "the hub gave no size for \(path)")
            }
            return RemoteFile(path: path, etag: etag, size: size)
        }
        throw ReadError(.io, path: url, "too many redirects asking for \(path)")
    }

    /// Where a relative redirect (no scheme, no host: `/id/resolve/…` or `resolve/…`) from `url` points, as
    /// RFC 3986 resolves it; nil for a redirect to another host, which `describe` does not follow (huggingface_hub's
    /// `follow_relative_redirects` does the same: an LFS file's HEAD answers with a redirect to its CDN, and the
    /// checksum is in that answer's headers).
    static func sameHostTarget(_ location: String, from url: String) -> String? {
        guard !location.isEmpty, !location.contains("://"), !location.hasPrefix("//"),
            let base = URL(string: url), let target = URL(string: location, relativeTo: base)
        else { return nil }
        return target.absoluteURL.absoluteString
    }

    /// An ETag as huggingface_hub normalises it: no weak prefix, no quotes, lower-case.
    static func normalizedETag(_ raw: String) -> String {
        var tag = raw.trimmingCharacters(in: .whitespaces)
        if tag.hasPrefix("W/") { tag.removeFirst(2) }
        return tag.trimmingCharacters(in: CharacterSet(charactersIn: "\"")).lowercased()
    }

    /// Brings `blobs/<etag>` into the cache: kept when it is there with the right size, else downloaded into
    /// `<etag>.incomplete` (resumed from what is there), checked, and renamed into place.
    static func fetch(
        _ file: RemoteFile, id: String, commit: String, repo: String, client: HTTPClient, options: Options,
        progress: (Int) -> Void
    ) throws(ReadError) {
        let blob = repo + "/blobs/" + file.etag
        if let size = HubCache.fileSize(blob), size == file.size { return }
        try HubCache.ensureFolder(repo + "/blobs", id: id)
        let locks = options.root + "/.locks/" + (repo.split(separator: "/").last.map(String.init) ?? "")
        try HubCache.ensureFolder(locks, id: id)
        let lock = open(locks + "/" + file.etag + ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard lock >= 0 else { throw ReadError(.io, path: locks, "cannot create a lock file (errno \(errno))") }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 && errno == EINTR {}
        if let size = HubCache.fileSize(blob), size == file.size { return }  // written meanwhile by another process
        let partial = blob + ".incomplete"
        let url =
            client.options.endpoint + "/" + id + "/resolve/" + commit + "/" + percentEncoded(file.path, keepSlash: true)
        var lastFailure = ""
        // What an earlier run left: if it turns out not to match the checksum, it is fetched again once, from 0.
        var startedFromEarlierBytes = (HubCache.fileSize(partial) ?? 0) > 0
        for attempt in 0..<max(options.attempts, 1) {
            if attempt > 0 { usleep(UInt32(min(attempt, 4)) * 500_000) }  // a moment for a brief outage to pass
            // Never through a link planted in a shared cache.
            let fd = open(partial, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw ReadError(.io, path: partial, "cannot open (errno \(errno))") }
            defer { close(fd) }
            var have = Int(lseek(fd, 0, SEEK_END))
            if have > file.size {
                ftruncate(fd, 0)
                lseek(fd, 0, SEEK_SET)
                have = 0
            }
            if have < file.size || file.size == 0 {
                progress(have)
                let range = have > 0 ? ["Range": "bytes=\(have)-"] : [:]
                var written = have
                var overrun = false
                var writeError: Int32 = 0
                let response = client.stream(url, path: file.path, headers: range) { status, chunk in
                    if status == 200 && written == have && have > 0 {
                        // The server ignored the Range: start over from byte 0.
                        ftruncate(fd, 0)
                        lseek(fd, 0, SEEK_SET)
                        written = 0
                        have = 0
                    }
                    guard written + chunk.count <= file.size else {
                        overrun = true
                        return false
                    }
                    guard chunk.withUnsafeBytes({ writeFully(fd, $0) }) else {
                        writeError = errno
                        return false
                    }
                    written += chunk.count
                    progress(written)
                    return true
                }
                if writeError != 0 {
                    throw ReadError(
                        .io, path: partial,
                        "cannot write the download of \(file.path) (\(String(cString: strerror(writeError)))); what "
                            + "arrived is kept: free space (or raise the file-size limit) and run the command again")
                }
                if overrun {
                    unlink(partial)
                    throw ReadError(
                        .integrity, path: url,
                        "the server sent more than the \(file.size) bytes the hub announced for "
                            + "\(file.path); nothing was kept")
                }
                if case .failure(let message) = response {
                    lastFailure = "broke off at byte \(written) of \(file.size) (\(message))"
                    continue
                }
                if case .status(let status, _) = response, status == 429 || status >= 500 {
                    lastFailure = "was refused with HTTP \(status) at byte \(written) of \(file.size)"
                    continue  // busy or failing for a moment: the next attempt resumes
                }
                if case .status(let status, let message) = response, status != 200 && status != 206 {
                    try check(
                        HTTPClient.Response(status: status, headers: [:], body: Array(message.utf8)), id: id,
                        what: file.path, url: url)
                }
                guard written == file.size else {
                    lastFailure = "ended at byte \(written) of \(file.size)"
                    continue
                }
            }
            do {
                try verify(fd: fd, file: file, url: url, partial: partial)
            } catch  where startedFromEarlierBytes && error.family == .integrity {
                startedFromEarlierBytes = false  // verify removed them: this attempt's successor starts from 0
                lastFailure = "did not match its checksum with the bytes an earlier run left"
                continue
            }
            guard fsync(fd) == 0, rename(partial, blob) == 0 else {
                throw ReadError(.io, path: blob, "cannot move the downloaded file into place (errno \(errno))")
            }
            return
        }
        throw ReadError(
            .truncated, path: url,
            "the download of \(file.path) \(lastFailure) after \(options.attempts) attempts; what arrived is kept in "
                + "\(partial): run the same command again to resume")
    }

    /// Checks the whole `.incomplete` file against the hub's checksum; a mismatch removes it.
    static func verify(fd: Int32, file: RemoteFile, url: String, partial: String) throws(ReadError) {
        var sha256 = SHA256()
        var sha1 = Insecure.SHA1()
        let isGitBlob = file.etag.count == 40
        if isGitBlob { sha1.update(data: Array("blob \(file.size)\0".utf8)) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset = 0
        while offset < file.size {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ReadError(.io, path: partial, "cannot read back (errno \(errno))") }
            buffer.withUnsafeBytes {
                let part = UnsafeRawBufferPointer(rebasing: $0[..<n])
                if isGitBlob { sha1.update(bufferPointer: part) } else { sha256.update(bufferPointer: part) }
            }
            offset += n
        }
        let digest =
            isGitBlob
            ? sha1.finalize().map { String(format: "%02x", $0) }.joined()
            : sha256.finalize().map { String(format: "%02x", $0) }.joined()
        guard digest == file.etag else {
            unlink(partial)
            throw ReadError(
                .integrity, path: url,
                "\(file.path): the downloaded bytes have \(isGitBlob ? "git blob SHA-1" : "SHA-256") \(digest), the hub "
                    + "says \(file.etag); nothing was kept — run the command again, and if it repeats the mirror "
                    + "(HF_ENDPOINT) serves damaged files")
        }
    }

    /// Points `snapshots/<commit>/<path>` at `../../blobs/<etag>` (relative, as huggingface_hub links it), replacing
    /// whatever link was there in one rename.
    static func link(_ file: RemoteFile, commit: String, repo: String, id: String) throws(ReadError) {
        let snapshot = repo + "/snapshots/" + commit
        let destination = snapshot + "/" + file.path
        let depth = file.path.split(separator: "/").count - 1
        let target = String(repeating: "../", count: depth + 2) + "blobs/" + file.etag
        let folder = (destination as NSString).deletingLastPathComponent
        try HubCache.ensureFolder(folder, id: id)
        if (try? FileManager.default.destinationOfSymbolicLink(atPath: destination)) == target { return }
        let temporary = folder + "/.amused-link-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard symlink(target, temporary) == 0 else {
            throw ReadError(.io, path: destination, "cannot create a symbolic link (errno \(errno))")
        }
        guard rename(temporary, destination) == 0 else {
            unlink(temporary)
            throw ReadError(.io, path: destination, "cannot put the symbolic link in place (errno \(errno))")
        }
    }

    static func writeAtomically(_ bytes: [UInt8], to path: String, id: String) throws(ReadError) {
        do throws(TensorError) {
            let writer = try AtomicFileWriter(destination: path)
            try writer.write(bytes)
            try writer.commit()
        } catch { throw ReadError.from(error, path: path) }
    }

    /// Turns an unsuccessful answer into an error that says what to do.
    static func check(_ response: HTTPClient.Response, id: String, what: String, url: String) throws(ReadError) {
        switch response.status {
        case 200..<300: return
        case 401, 403:
            throw ReadError(
                .forbidden, path: url,
                "the hub refused \(what) (HTTP \(response.status)): \(id) does not exist (check the id), or it is gated "
                    + "or private — accept its terms on the hub and set HF_TOKEN to a token that may read it")
        case 404:
            throw ReadError(
                .io, path: url, "the hub has no \(what) (HTTP 404): check the id, --revision and the file name")
        default:
            let text = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw ReadError(.io, path: url, "the hub answered HTTP \(response.status) for \(what): \(text)")
        }
    }

    /// Percent-encodes a revision or path for a URL (`/` kept only when asked: a branch `a/b` is one segment).
    static func percentEncoded(_ text: String, keepSlash: Bool = false) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(
            CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        allowed.insert(charactersIn: "-._~" + (keepSlash ? "/" : ""))
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// A small synchronous HTTP client over URLSession: whole answers for the API, streamed bodies for files.
final class HTTPClient: Sendable {
    let options: HubDownload.Options

    init(options: HubDownload.Options) { self.options = options }

    /// A whole answer.
    struct Response {
        let status: Int
        let headers: [String: String]
        let body: [UInt8]
        /// A header, by its lower-case name.
        func header(_ name: String) -> String? { headers[name] }
    }

    /// How a streamed request ended.
    enum Outcome {
        /// The server answered with this status (and, for an error status, this text).
        case status(Int, String)
        /// The connection broke or timed out.
        case failure(String)
    }

    /// `GET url`, redirects followed, at most `limit` bytes of body.
    func get(_ url: String, path: String, limit: Int) throws(ReadError) -> Response {
        try whole(url, method: "GET", path: path, limit: limit, followRedirects: true)
    }

    /// `HEAD url`, redirects not followed.
    func head(_ url: String, path: String) throws(ReadError) -> Response {
        try whole(url, method: "HEAD", path: path, limit: 0, followRedirects: false)
    }

    private func whole(_ url: String, method: String, path: String, limit: Int, followRedirects: Bool)
        throws(ReadError) -> Response
    {
        var body: [UInt8] = []
        var tooLong = false
        let (outcome, response) = run(url, method: method, headers: [:], followRedirects: followRedirects) { _, chunk in
            guard body.count + chunk.count <= limit else {
                tooLong = true
                return false
            }
            body += chunk
            return true
        }
        if tooLong { throw ReadError(.limitExceeded, path: url, "the answer is longer than \(limit) bytes") }
        if case .failure(let message) = outcome {
            throw ReadError(.io, path: url, "cannot reach the hub for \(path): \(message) (is HF_ENDPOINT right?)")
        }
        return Response(status: response?.statusCode ?? 0, headers: Self.headers(response), body: body)
    }

    /// `GET url` with `headers`, redirects followed; each chunk of the body goes to `sink` with the status (false
    /// from it stops the transfer).
    func stream(_ url: String, path: String, headers: [String: String], sink: (Int, Data) -> Bool) -> Outcome {
        var errorText: [UInt8] = []
        let (outcome, response) = run(url, method: "GET", headers: headers, followRedirects: true) { status, chunk in
            guard (200..<300).contains(status) else {
                if errorText.count < 4096 { errorText += chunk.prefix(4096 - errorText.count) }
                return true
            }
            return sink(status, chunk)
        }
        if case .failure = outcome { return outcome }
        return .status(response?.statusCode ?? 0, String(decoding: errorText, as: UTF8.self))
    }

    private func run(
        _ url: String, method: String, headers: [String: String], followRedirects: Bool,
        sink: (Int, Data) -> Bool
    ) -> (Outcome, HTTPURLResponse?) {
        guard let target = URL(string: url), target.scheme == "https" || target.scheme == "http" else {
            return (.failure("\(url) is not an http(s) URL"), nil)
        }
        var request = URLRequest(url: target)
        request.httpMethod = method
        request.timeoutInterval = options.timeout
        request.setValue(options.userAgent, forHTTPHeaderField: "User-Agent")
        // The bytes as stored: sizes and ranges then mean what the hub's checksums cover (a transparently gzipped
        // answer would not), as huggingface_hub asks.
        request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        if let token = options.token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        // The sink is called only until the task completes, which this waits for: it never outlives this call.
        let (transfer, task) = withoutActuallyEscaping(sink) { sink in
            let transfer = Transfer(followRedirects: followRedirects, origin: Transfer.origin(target), sink: sink)
            let configuration = URLSessionConfiguration.ephemeral
            configuration.timeoutIntervalForRequest = options.timeout
            configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
            let session = URLSession(configuration: configuration, delegate: transfer, delegateQueue: nil)
            let task = session.dataTask(with: request)
            task.resume()
            transfer.done.wait()
            session.finishTasksAndInvalidate()
            transfer.finish()
            return (transfer, task)
        }
        let response = task.response as? HTTPURLResponse
        if let error = transfer.error, !transfer.stoppedBySink {
            return (.failure(error.localizedDescription), response)
        }
        return (.status(response?.statusCode ?? 0, ""), response)
    }

    private static func headers(_ response: HTTPURLResponse?) -> [String: String] {
        var out: [String: String] = [:]
        for (key, value) in response?.allHeaderFields ?? [:] {
            if let k = key as? String, let v = value as? String { out[k.lowercased()] = v }
        }
        return out
    }
}

/// One URLSession task's delegate: streams the body to a sink, stops redirects when asked, drops the token on a
/// redirect to another host (a CDN).
private final class Transfer: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let followRedirects: Bool
    /// Scheme, host and port of the first request: the token goes nowhere else.
    let origin: String
    private var sink: ((Int, Data) -> Bool)?
    let done = DispatchSemaphore(value: 0)
    var error: Error?
    var stoppedBySink = false
    private var status = 0

    init(followRedirects: Bool, origin: String, sink: @escaping (Int, Data) -> Bool) {
        (self.followRedirects, self.origin, self.sink) = (followRedirects, origin, sink)
    }

    /// `scheme://host:port` of `url`.
    static func origin(_ url: URL?) -> String {
        "\(url?.scheme ?? "")://\(url?.host ?? ""):\(url?.port ?? (url?.scheme == "https" ? 443 : 80))"
    }

    /// Drops the sink once the task has completed (a late callback finds none).
    func finish() { sink = nil }

    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void
    ) {
        guard followRedirects else { return completionHandler(nil) }
        var next = request
        if Self.origin(next.url) != origin { next.setValue(nil, forHTTPHeaderField: "Authorization") }
        completionHandler(next)
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        status = (response as? HTTPURLResponse)?.statusCode ?? 0
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard !stoppedBySink, let sink else { return }
        if !sink(status, data) {
            stoppedBySink = true
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        self.error = error
        done.signal()
    }
}
