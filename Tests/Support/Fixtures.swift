// Where the committed fixtures are, and scratch folders for tests that write files.

import AmusedRead
import Foundation

/// Paths into `Fixtures/` (made by `Tools/make_fixtures.py`; see `Fixtures/MANIFEST.json`).
public enum FixturePaths {
    /// The repository root, found from this source file's location.
    public static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// `Fixtures/<relative>`.
    public static func path(_ relative: String) -> String { repo + "/Fixtures/" + relative }

    /// The two tiny reference records.
    public static let records = ["tiny-256", "tiny-512"]

    /// Reads a fixture JSON file with the strict parser.
    public static func json(_ relative: String) throws -> JSONValue {
        try Checkpoint.readJSON(path(relative))
    }
}

/// A fresh temporary folder, removed when the value is released.
public final class ScratchFolder {
    /// The folder's path.
    public let path: String

    /// Creates the folder under the system's temporary directory.
    public init() throws {
        path = NSTemporaryDirectory() + "amused-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `bytes` to `name` inside the folder and returns its path.
    @discardableResult
    public func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    /// The names of the files in the folder, sorted.
    public func listing() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path).sorted()
    }
}
