// Reference records (docs/reference-record.md, format version 1): record.json + record.safetensors,
// with the checkpoint in model/ or where "model" points.

import AmusedCore
import AmusedRead
import Foundation

/// The one error type of the verify stage.
public struct VerifyError: Error, DescribedError {
    /// The file concerned.
    public let path: String
    /// The case or tensor concerned.
    public let field: String?
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(path: String, field: String? = nil, _ message: String) {
        self.path = path
        self.field = field
        self.message = message
    }

    /// What to do.
    public var advice: String {
        "Check that the record was written by Tools/ (format amused-reference-record, version 1) and is complete."
    }
}

/// One case of a record: its name, kind and the raw JSON (for kind-specific keys).
public struct RecordCase: Sendable {
    /// Unique name (`[A-Za-z0-9_-]+`).
    public let name: String
    /// `text_encoder`, `transformer`, `vq_decode`, `vq_encode`, `text_to_image`, `image_to_image`, `inpaint`, or other.
    public let kind: String
    /// The case object as written.
    public let json: JSONValue
}

/// A reference record opened for checking.
public struct ReferenceRecord: Sendable {
    /// The record folder.
    public let folder: String
    /// The checkpoint folder the record was made with.
    public let modelPath: String
    /// The reference versions (`torch`, `diffusers`, `transformers`, …).
    public let reference: JSONValue?
    /// The cases, in record order.
    public let cases: [RecordCase]
    /// The tensors, named `<case>/<field>`.
    public let tensors: SafetensorsFile

    /// Opens the record in `folder` (or the folder holding `record.json` when given its path).
    public init(path: String) throws {
        var folder = path.hasSuffix("/record.json") ? String(path.dropLast("/record.json".count)) : path
        if folder.hasSuffix("/") { folder.removeLast() }
        self.folder = folder
        let jsonPath = folder + "/record.json"
        let root = try Checkpoint.readJSON(jsonPath)
        guard root["format"]?.stringValue == "amused-reference-record" else {
            throw VerifyError(path: jsonPath, field: "format", "not an amused-reference-record")
        }
        guard root["version"]?.intValue == 1 else {
            throw VerifyError(
                path: jsonPath, field: "version", "unsupported record version \(root["version"]?.serialized ?? "none")")
        }
        let model = root["model"]?.stringValue ?? "model"
        let local = model.hasPrefix("/") ? model : folder + "/" + model
        // A record of a hub checkpoint (Tools/record.py --model org/name) names it by its id: the local cache has it.
        if !FileManager.default.fileExists(atPath: local), HubCache.isHubID(model),
            let snapshot = try? HubCache.snapshot(id: model)
        {
            modelPath = snapshot
        } else {
            modelPath = local
        }
        reference = root["reference"]
        guard let list = root["cases"]?.arrayValue else {
            throw VerifyError(path: jsonPath, field: "cases", "no cases list")
        }
        var seen = Set<String>()
        var cases: [RecordCase] = []
        for c in list {
            guard let name = c["name"]?.stringValue, let kind = c["kind"]?.stringValue else {
                throw VerifyError(path: jsonPath, field: "cases", "a case lacks a name or kind")
            }
            guard !name.isEmpty,
                name.utf8.allSatisfy({
                    $0 == 0x5F || $0 == 0x2D || (0x30...0x39).contains($0)
                        || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)
                }), seen.insert(name).inserted
            else {
                throw VerifyError(path: jsonPath, field: name, "case names must be unique and match [A-Za-z0-9_-]+")
            }
            cases.append(RecordCase(name: name, kind: kind, json: c))
        }
        self.cases = cases
        tensors = try SafetensorsFile(path: folder + "/record.safetensors")
    }

    /// The tensor `<case>/<field>`, checked to have `rank` dimensions when given.
    public func tensor(_ c: RecordCase, _ field: String, rank: Int? = nil) throws -> Tensor {
        let name = "\(c.name)/\(field)"
        guard tensors.names.contains(name) else {
            throw VerifyError(path: tensors.path, field: name, "the record has no tensor \(name)")
        }
        let t = try tensors.tensor(named: name)
        if let rank, t.shape.count != rank {
            throw VerifyError(
                path: tensors.path, field: name, "expected \(rank) dimensions, found \(describeShape(t.shape))")
        }
        return t
    }
}
