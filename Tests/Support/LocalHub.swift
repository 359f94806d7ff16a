// A stand-in for the Hugging Face hub on loopback, for the download tests: the endpoints huggingface_hub and
// `amused download` use, answered as the hub answers them, from a folder of files —
//   GET  /api/models/<id>/revision/<rev>   {"sha": commit, "siblings": [{"rfilename": …}, …]}
//   HEAD /<id>/resolve/<rev>/<path>        a git file: 200 with ETag = git blob SHA-1, Content-Length;
//                                          an LFS file (*.safetensors): 302 to /cdn/<sha256>, X-Linked-Etag = SHA-256,
//                                          X-Linked-Size
//   GET  /<id>/resolve/<rev>/<path>        the git file's bytes, or the same 302
//   GET  /cdn/<sha256>                     the LFS file's bytes, honouring Range: bytes=N-
// with the faults a real network has, on demand: a connection that breaks after some bytes, bytes that do not match
// their checksum, a token required, a hostile file list. Every request is logged.

import Crypto
import Foundation

/// A hub on 127.0.0.1 serving one repository.
public final class LocalHub: @unchecked Sendable {
    /// One file of the repository.
    public struct File: Sendable {
        /// Path in the repository.
        public let path: String
        /// Its bytes.
        public let bytes: [UInt8]
        /// Stored in LFS (answered through the CDN redirect with a SHA-256 ETag).
        public var lfs: Bool { path.hasSuffix(".safetensors") }
        /// The hub's ETag: SHA-256 for LFS files, the git blob SHA-1 for others.
        public var etag: String {
            if lfs { return SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }
            return Insecure.SHA1.hash(data: Array("blob \(bytes.count)\0".utf8) + bytes)
                .map { String(format: "%02x", $0) }.joined()
        }
    }

    /// The repository id (org/name).
    public let id: String
    /// The commit `main` points at.
    public let commit: String
    /// The files served.
    public let files: [File]
    /// The port listened on.
    public private(set) var port = 0
    /// `http://127.0.0.1:<port>`.
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    private let lock = NSLock()
    private var _log: [String] = []
    private var _breaks: [String: (after: Int, times: Int)] = [:]
    private var _corrupt: Set<String> = []
    private var _token: String?
    private var _extraListing: [String] = []
    private var listener: Int32 = -1

    /// Branches and tags that name `commit` (besides the commit itself).
    public var branches: Set<String> {
        get { lock.withLock { _branches } }
        set { lock.withLock { _branches = newValue } }
    }
    private var _branches: Set<String> = ["main"]
    /// The host LFS redirects point at ("localhost" makes the CDN another origin than the hub's 127.0.0.1).
    public var cdnHost: String {
        get { lock.withLock { _cdnHost } }
        set { lock.withLock { _cdnHost = newValue } }
    }
    private var _cdnHost = "127.0.0.1"

    /// Every request so far: `METHOD path`, plus ` range=<Range>` when one was sent and ` auth` when it carried an
    /// Authorization header.
    public var log: [String] { lock.withLock { _log } }

    /// Serves the files of `folder` (every regular file under it) as `id` at a fixed commit.
    public init(id: String, folder: String, commit: String = String(repeating: "ab12", count: 10)) throws {
        let fm = FileManager.default
        var files: [File] = []
        for case let relative as String in fm.enumerator(atPath: folder)! {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: folder + "/" + relative, isDirectory: &isDirectory), !isDirectory.boolValue
            else { continue }
            files.append(
                File(path: relative, bytes: Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/" + relative)))))
        }
        (self.id, self.commit, self.files) = (id, commit, files.sorted { $0.path < $1.path })
        try startListening()
    }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))  // wakes the thread blocked in accept
        close(listener)
    }

    /// The next `times` downloads of `path` send `after` bytes of the body and then drop the connection.
    public func breakDownloads(of path: String, after: Int, times: Int) {
        lock.withLock { _breaks[path] = (after, times) }
    }

    /// The next `times` downloads of `path` are answered with `status` (a 503, a 429) and no body.
    public func refuseDownloads(of path: String, status: Int, times: Int) {
        lock.withLock { _refusals[path] = (status, times) }
    }
    private var _refusals: [String: (status: Int, times: Int)] = [:]

    /// `path` is served with one byte changed (its ETag still that of the true bytes).
    public func corrupt(_ path: String) { lock.withLock { _ = _corrupt.insert(path) } }

    /// Requests without `Authorization: Bearer <token>` get 401.
    public func requireToken(_ token: String) { lock.withLock { _token = token } }

    /// Adds names to the file list the API gives (for hostile listings).
    public func list(_ extra: String) { lock.withLock { _extraListing.append(extra) } }

    /// The repository's name before it was renamed: requests naming it are redirected (307) to `id`, as the hub
    /// does — the API with a path-absolute `Location`, file requests with one relative to the request's folder
    /// (`../../…`) when `dotRelative` is set.
    public func renamed(from old: String, dotRelative: Bool) {
        lock.withLock { _renamedFrom = (old, dotRelative) }
    }
    private var _renamedFrom: (old: String, dotRelative: Bool)?

    private func startListening() throws {
        listener = socket(AF_INET, streamSocket, 0)
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(listener, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let listening = listener
        Thread.detachNewThread { [weak self] in
            while true {
                let connection = accept(listening, nil, nil)
                guard connection >= 0, let hub = self else { return }  // closed: the hub is gone
                Thread.detachNewThread {
                    hub.serve(connection)
                    close(connection)
                }
            }
        }
    }

    private func serve(_ connection: Int32) {
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !request.ends(with: Array("\r\n\r\n".utf8)) && request.count < 65536 {
            let n = recv(connection, &buffer, buffer.count, 0)
            guard n > 0 else { return }
            request += buffer[..<n]
        }
        let lines = String(decoding: request, as: UTF8.self).components(separatedBy: "\r\n")
        let first = lines[0].split(separator: " ")
        guard first.count >= 2 else { return }
        let method = String(first[0])
        let target = (String(first[1]).removingPercentEncoding ?? String(first[1]))
        var headers: [String: String] = [:]
        for line in lines.dropFirst() where line.contains(":") {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers[parts[0].lowercased()] = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
        }
        let range = headers["range"]
        lock.withLock {
            _log.append(
                "\(method) \(target)" + (range.map { " range=\($0)" } ?? "")
                    + (headers["authorization"] != nil ? " auth" : ""))
        }
        let (token, extra, corrupt) = lock.withLock { (_token, _extraListing, _corrupt) }
        if let token, headers["authorization"] != "Bearer \(token)", !target.hasPrefix("/cdn/") {
            return respond(connection, 401, body: Array(#"{"error":"Access to model \#(id) is restricted."}"#.utf8))
        }
        if let (old, dotRelative) = lock.withLock({ _renamedFrom }) {
            if target.hasPrefix("/api/models/\(old)/") {
                let location = "/api/models/\(id)/" + target.dropFirst("/api/models/\(old)/".count)
                return respond(connection, 307, headers: ["Location": location], body: [], head: method == "HEAD")
            }
            if target.hasPrefix("/\(old)/resolve/") {
                let rest = "\(id)/resolve/" + target.dropFirst("/\(old)/resolve/".count)
                let depth = target.split(separator: "/").count - 1
                let location = dotRelative ? String(repeating: "../", count: depth) + rest : "/" + rest
                return respond(connection, 307, headers: ["Location": location], body: [], head: method == "HEAD")
            }
        }
        let apiPrefix = "/api/models/\(id)/revision/"
        if method == "GET", target.hasPrefix(apiPrefix) {
            let revision = String(target.dropFirst(apiPrefix.count))
            guard branches.contains(revision) || revision == commit else {
                return respond(connection, 404, body: Array(#"{"error":"Invalid rev id"}"#.utf8))
            }
            let names = files.map(\.path) + extra
            let siblings = names.map { #"{"rfilename":"\#($0)"}"# }.joined(separator: ",")
            return respond(
                connection, 200, body: Array(#"{"id":"\#(id)","sha":"\#(commit)","siblings":[\#(siblings)]}"#.utf8))
        }
        let resolvePrefix = "/\(id)/resolve/"
        if target.hasPrefix(resolvePrefix) {
            let rest = target.dropFirst(resolvePrefix.count)
            guard let slash = rest.firstIndex(of: "/") else { return respond(connection, 404, body: []) }
            let revision = rest[..<slash], path = String(rest[rest.index(after: slash)...])
            guard branches.contains(String(revision)) || revision == commit,
                let file = files.first(where: { $0.path == path })
            else {
                return respond(connection, 404, body: Array("Entry not found".utf8))
            }
            var extraHeaders = ["X-Repo-Commit": commit]
            if file.lfs {
                extraHeaders["Location"] = "http://\(cdnHost):\(port)/cdn/" + file.etag
                extraHeaders["X-Linked-Etag"] = "\"\(file.etag)\""
                extraHeaders["X-Linked-Size"] = "\(file.bytes.count)"
                extraHeaders["ETag"] = "\"0123abcd-git-pointer\""
                return respond(connection, 302, headers: extraHeaders, body: [], head: method == "HEAD")
            }
            extraHeaders["ETag"] = "\"\(file.etag)\""
            return respond(connection, 200, headers: extraHeaders, body: file.bytes, head: method == "HEAD")
        }
        if target.hasPrefix("/cdn/"), let file = files.first(where: { $0.lfs && "/cdn/" + $0.etag == target }) {
            let refusal: Int? = lock.withLock {
                guard let r = _refusals[file.path], r.times > 0 else { return nil }
                _refusals[file.path] = (r.status, r.times - 1)
                return r.status
            }
            if let refusal { return respond(connection, refusal, body: Array("busy".utf8)) }
            var body = file.bytes
            if corrupt.contains(file.path), !body.isEmpty { body[body.count / 2] ^= 0x5A }
            var start = 0
            if let range, range.hasPrefix("bytes="), range.hasSuffix("-"),
                let from = Int(range.dropFirst(6).dropLast()), from <= body.count
            {
                start = from
            }
            let slice = Array(body[start...])
            var cut: Int? = nil
            lock.withLock {
                if let b = _breaks[file.path], b.times > 0 {
                    cut = b.after
                    _breaks[file.path] = (b.after, b.times - 1)
                }
            }
            let headers =
                start > 0
                ? ["Content-Range": "bytes \(start)-\(body.count - 1)/\(body.count)"] : [String: String]()
            return respond(connection, start > 0 ? 206 : 200, headers: headers, body: slice, cutAfter: cut)
        }
        respond(connection, 404, body: Array("Not found".utf8))
    }

    private func respond(
        _ connection: Int32, _ status: Int, headers: [String: String] = [:], body: [UInt8], head: Bool = false,
        cutAfter: Int? = nil
    ) {
        var text = "HTTP/1.1 \(status) \(status == 200 ? "OK" : status == 206 ? "Partial Content" : "Status")\r\n"
        text += "Content-Length: \(body.count)\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if !head { bytes += cutAfter.map { Array(body.prefix($0)) } ?? body }
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, noSignal) }
            guard n > 0 else { return }
            done += n
        }
        if cutAfter != nil {
            // A connection that breaks: reset rather than close cleanly.
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(connection, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        }
    }
}

#if canImport(Glibc)
private let streamSocket = Int32(SOCK_STREAM.rawValue)
private let noSignal = Int32(MSG_NOSIGNAL)
#else
private let streamSocket = SOCK_STREAM
private let noSignal: Int32 = 0
#endif

extension Array where Element == UInt8 {
    fileprivate func ends(with suffix: [UInt8]) -> Bool {
        count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix
    }
}
