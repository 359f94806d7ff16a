// Name maps are data: JSON files (schema: Schemas/name-map.schema.json) of rules that turn a checkpoint's tensor
// names into the canonical (diffusers) names, with a small closed set of tensor operations. Applying a map yields a
// view of the source under canonical names and a ledger that accounts for every source tensor.

import AmusedCore
import AmusedRead
import Foundation

/// The one error type of the map stage.
public struct MapError: Error, DescribedError, Equatable {
    /// The map, file or tensor concerned.
    public let subject: String
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(_ subject: String, _ message: String) {
        self.subject = subject
        self.message = message
    }

    /// The subject, as the message names it first.
    public var path: String { subject }
    /// What to do.
    public var advice: String { "Check that the checkpoint's layout matches the map (or force one with --layout)." }
}

/// A name pattern: literal text with placeholders. `{i}` matches digits; `{side:down|up}` one of the listed words;
/// `{*}` the rest of the name (last only). In output templates `{last-k}` subtracts (names or integers).
struct Template: Sendable, Equatable {
    enum Part: Sendable, Equatable {
        case literal(String)
        case digits(String)
        case choice(String, [String])
        case rest
        case difference(String, String)
    }

    let parts: [Part]
    let text: String

    init(_ text: String) throws(MapError) {
        self.text = text
        var parts: [Part] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            if rest.first == "{" {
                guard let close = rest.firstIndex(of: "}") else { throw MapError(text, "unclosed '{'") }
                let body = String(rest[rest.index(after: rest.startIndex)..<close])
                if body == "*" {
                    parts.append(.rest)
                } else if let colon = body.firstIndex(of: ":") {
                    parts.append(
                        .choice(
                            String(body[..<colon]),
                            body[body.index(after: colon)...].split(separator: "|").map(String.init)))
                } else if let minus = body.firstIndex(of: "-") {
                    parts.append(.difference(String(body[..<minus]), String(body[body.index(after: minus)...])))
                } else {
                    parts.append(.digits(body))
                }
                rest = rest[rest.index(after: close)...]
            } else {
                let next = rest.firstIndex(of: "{") ?? rest.endIndex
                parts.append(.literal(String(rest[..<next])))
                rest = rest[next...]
            }
        }
        self.parts = parts
    }

    /// The bindings under which `name` matches, or nil.
    func match(_ name: String) -> [String: String]? {
        var bindings: [String: String] = [:]
        var s = Substring(name)
        for (index, part) in parts.enumerated() {
            switch part {
            case .literal(let l):
                guard s.hasPrefix(l) else { return nil }
                s = s.dropFirst(l.count)
            case .digits(let n):
                let d = s.prefix { $0.isASCII && $0.isNumber }
                guard !d.isEmpty else { return nil }
                if let bound = bindings[n], bound != String(d) { return nil }
                bindings[n] = String(d)
                s = s.dropFirst(d.count)
            case .choice(let n, let words):
                guard let w = words.first(where: { s.hasPrefix($0) }) else { return nil }
                bindings[n] = w
                s = s.dropFirst(w.count)
            case .rest:
                guard index == parts.count - 1, !s.isEmpty else { return nil }
                bindings["*"] = String(s)
                s = s.dropFirst(s.count)
            case .difference:
                return nil  // only in output templates
            }
        }
        return s.isEmpty ? bindings : nil
    }

    /// The name for `bindings` (and map constants).
    func render(_ bindings: [String: String], constants: [String: Int]) throws(MapError) -> String {
        var out = ""
        func value(_ token: String) throws(MapError) -> Int {
            if let i = Int(token) { return i }
            if let c = constants[token] { return c }
            if let b = bindings[token], let i = Int(b) { return i }
            throw MapError(text, "unknown value \(token)")
        }
        for part in parts {
            switch part {
            case .literal(let l): out += l
            case .digits(let n):
                guard let b = bindings[n] ?? constants[n].map(String.init) else {
                    throw MapError(text, "unbound {\(n)}")
                }
                out += b
            case .choice(let n, _):
                guard let b = bindings[n] else { throw MapError(text, "unbound {\(n)}") }
                out += b
            case .rest:
                guard let b = bindings["*"] else { throw MapError(text, "unbound {*}") }
                out += b
            case .difference(let a, let b):
                let (d, overflow) = try value(a).subtractingReportingOverflow(value(b))
                guard !overflow else { throw MapError(text, "{\(a)-\(b)} overflows 64 bits") }
                out += String(d)
            }
        }
        return out
    }
}

/// One rule of a map.
public struct MapRule: Sendable {
    /// The operation.
    public enum Operation: String, Sendable {
        /// Same tensor, new name.
        case rename
        /// Several sources joined along `axis`, in the order listed.
        case concat
        /// One source cut into equal parts along `axis`.
        case split
        /// A 2-D source transposed.
        case transpose
        /// A source given a new shape with the same element count (`shape`, one entry may be -1).
        case reshape
        /// Size-1 axes removed (all of them, or only `axis`).
        case squeeze
        /// A source deliberately not used (with the reason).
        case drop
    }

    /// The operation.
    public let operation: Operation
    let from: [Template]
    let to: [Template]
    /// Axis of concat/split.
    public let axis: Int
    /// Why a drop rule drops.
    public let reason: String?
    /// The target shape of a reshape.
    public var shape: [Int] = []
    /// Whether the rule named an axis (squeeze removes only that one then).
    public var hasAxis = false
}

/// A name map.
public struct NameMap: Sendable {
    /// The map's name (`open-muse-transformer`, …).
    public let name: String
    /// The component it maps (`transformer`, `vqvae`, `text_encoder`).
    public let component: String
    /// What it is for.
    public let description: String
    /// Rules, tried in order; the first whose (first) source pattern matches a tensor consumes it.
    public let rules: [MapRule]

    /// Decodes a map document.
    public init(json: JSONValue, source: String) throws(MapError) {
        guard json["format"]?.stringValue == "amused-name-map", json["version"]?.intValue == 1,
            let name = json["name"]?.stringValue, let component = json["component"]?.stringValue,
            let rules = json["rules"]?.arrayValue
        else { throw MapError(source, "not an amused-name-map version 1 document") }
        self.name = name
        self.component = component
        self.description = json["description"]?.stringValue ?? ""
        var parsed: [MapRule] = []
        for (i, r) in rules.enumerated() {
            func templates(_ key: String) throws(MapError) -> [Template] {
                guard let v = r[key] else { return [] }
                if let s = v.stringValue { return [try Template(s)] }
                guard let a = v.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else {
                    throw MapError(source, "rule \(i): \(key) must be a pattern or a list of patterns")
                }
                return try a.map { (t) throws(MapError) in try Template(t.stringValue!) }
            }
            let op = MapRule.Operation(rawValue: r["op"]?.stringValue ?? "rename")
            guard let op else { throw MapError(source, "rule \(i): unknown op \(r["op"]!.serialized)") }
            let from = try templates("from"), to = try templates("to")
            let shapeOK: Bool
            switch op {
            case .rename, .transpose, .squeeze: shapeOK = from.count == 1 && to.count == 1
            case .reshape:
                let dims = r["shape"]?.arrayValue?.compactMap(\.intValue) ?? []
                shapeOK =
                    from.count == 1 && to.count == 1 && !dims.isEmpty && dims.count == r["shape"]?.arrayValue?.count
                    && dims.filter { $0 == -1 }.count <= 1 && dims.allSatisfy { $0 == -1 || $0 > 0 }
            case .concat: shapeOK = from.count >= 2 && to.count == 1
            case .split: shapeOK = from.count == 1 && to.count >= 2
            case .drop: shapeOK = from.count == 1 && to.isEmpty && r["reason"]?.stringValue != nil
            }
            guard shapeOK else {
                throw MapError(
                    source,
                    "rule \(i): wrong number of patterns for \(op.rawValue)"
                        + (op == .reshape ? ", or no valid shape (positive sizes, at most one -1)" : ""))
            }
            var rule = MapRule(
                operation: op, from: from, to: to, axis: r["axis"]?.intValue ?? 0,
                reason: r["reason"]?.stringValue)
            rule.shape = r["shape"]?.arrayValue?.compactMap(\.intValue) ?? []
            rule.hasAxis = r["axis"] != nil
            parsed.append(rule)
        }
        self.rules = parsed
    }

    /// The maps that ship with AmusedKit, by name.
    public static func shipped(_ name: String) throws -> NameMap {
        guard
            let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "maps")
                ?? Bundle.module.url(forResource: name, withExtension: "json")
        else { throw MapError(name, "no such shipped map") }
        return try NameMap(json: Checkpoint.readJSON(url.path), source: url.lastPathComponent)
    }
}
