// A JSON Schema (2020-12) validator for the subset our schemas use, so that tests check every manifest, policy and
// name map they touch against `Schemas/` without running Python: type, const, enum, properties, required,
// additionalProperties, items, min/maxItems, minLength, minimum, maximum, multipleOf, pattern, allOf/anyOf/oneOf/not,
// if/then/else, and $ref to `#/$defs/…` or to another schema file in `Schemas/` (optionally with a fragment).
// Annotations (title, description, default, $schema, $id) are ignored; any other keyword is an error, so a schema
// cannot silently use something this validator does not check.

import AmusedRead
import Foundation

/// Validates JSON values against the schemas in `Schemas/`.
public struct SchemaValidator {
    let schemas: [String: JSONValue]

    /// Loads every `Schemas/*.schema.json`.
    public init() throws {
        let dir = FixturePaths.repo + "/Schemas"
        var schemas: [String: JSONValue] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".schema.json") {
            schemas[name] = try Checkpoint.readJSON(dir + "/" + name)
        }
        self.schemas = schemas
    }

    /// The problems of `value` against schema file `name` (empty when valid), each with its JSON path.
    public func errors(_ value: JSONValue, schema name: String) -> [String] {
        guard let root = schemas[name] else { return ["no schema \(name)"] }
        var errors: [String] = []
        check(value, root, file: name, at: "$", &errors)
        return errors
    }

    private func resolve(_ ref: String, file: String) -> (JSONValue, String)? {
        let parts = ref.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let target = parts[0].isEmpty ? file : (parts[0] as NSString).lastPathComponent
        guard var node = schemas[target] else { return nil }
        if parts.count == 2, !parts[1].isEmpty {
            for key in parts[1].split(separator: "/") {
                guard let next = node[String(key)] else { return nil }
                node = next
            }
        }
        return (node, target)
    }

    private static let annotations: Set<String> = [
        "$schema", "$id", "title", "description", "default", "$defs", "$comment",
    ]

    private func check(_ v: JSONValue, _ s: JSONValue, file: String, at path: String, _ errors: inout [String]) {
        if case .bool(let b) = s {
            if !b { errors.append("\(path): not allowed") }
            return
        }
        guard let schema = s.objectValue else {
            errors.append("\(path): schema is not an object")
            return
        }
        for (key, rule) in schema.entries {
            switch key {
            case _ where Self.annotations.contains(key): continue
            case "$ref":
                guard let ref = rule.stringValue, let (target, targetFile) = resolve(ref, file: file) else {
                    errors.append("\(path): unresolvable $ref \(rule.serialized)")
                    continue
                }
                check(v, target, file: targetFile, at: path, &errors)
            case "type":
                let types = rule.arrayValue?.compactMap(\.stringValue) ?? [rule.stringValue ?? ""]
                if !types.contains(where: { Self.hasType(v, $0) }) { errors.append("\(path): not of type \(types)") }
            case "const":
                if !Self.equal(v, rule) { errors.append("\(path): must be \(rule.serialized)") }
            case "enum":
                if !(rule.arrayValue ?? []).contains(where: { Self.equal(v, $0) }) {
                    errors.append("\(path): \(v.serialized.prefix(60)) not in \(rule.serialized)")
                }
            case "properties":
                guard let o = v.objectValue else { continue }
                for (name, sub) in rule.objectValue?.entries ?? [] {
                    if let value = o[name] { check(value, sub, file: file, at: "\(path).\(name)", &errors) }
                }
            case "required":
                guard let o = v.objectValue else { continue }
                for name in rule.arrayValue?.compactMap(\.stringValue) ?? [] where o[name] == nil {
                    errors.append("\(path): missing \(name)")
                }
            case "additionalProperties":
                guard let o = v.objectValue else { continue }
                let known = Set(schema["properties"]?.objectValue?.keys ?? [])
                for (name, value) in o.entries where !known.contains(name) {
                    check(value, rule, file: file, at: "\(path).\(name)", &errors)
                }
            case "items":
                for (i, item) in (v.arrayValue ?? []).enumerated() {
                    check(item, rule, file: file, at: "\(path)[\(i)]", &errors)
                }
            case "minItems":
                if let a = v.arrayValue, a.count < rule.intValue ?? 0 {
                    errors.append("\(path): fewer than \(rule.serialized) items")
                }
            case "maxItems":
                if let a = v.arrayValue, a.count > rule.intValue ?? Int.max {
                    errors.append("\(path): more than \(rule.serialized) items")
                }
            case "minLength":
                if let s = v.stringValue, s.count < rule.intValue ?? 0 {
                    errors.append("\(path): shorter than \(rule.serialized)")
                }
            case "minimum":
                if let d = Self.number(v), d < rule.doubleValue ?? -.infinity {
                    errors.append("\(path): below \(rule.serialized)")
                }
            case "maximum":
                if let d = Self.number(v), d > rule.doubleValue ?? .infinity {
                    errors.append("\(path): above \(rule.serialized)")
                }
            case "multipleOf":
                if let d = Self.number(v), let m = rule.doubleValue, d.truncatingRemainder(dividingBy: m) != 0 {
                    errors.append("\(path): not a multiple of \(m)")
                }
            case "pattern":
                if let s = v.stringValue, let p = rule.stringValue,
                    (try? NSRegularExpression(pattern: p))?.firstMatch(in: s, range: NSRange(s.startIndex..., in: s))
                        == nil
                {
                    errors.append("\(path): \(s.prefix(40)) does not match \(p)")
                }
            case "allOf":
                for sub in rule.arrayValue ?? [] { check(v, sub, file: file, at: path, &errors) }
            case "anyOf", "oneOf":
                let passing = (rule.arrayValue ?? []).filter { sub in
                    var e: [String] = []
                    check(v, sub, file: file, at: path, &e)
                    return e.isEmpty
                }.count
                if key == "anyOf" ? passing == 0 : passing != 1 {
                    errors.append("\(path): \(passing) of the \(key) alternatives match")
                }
            case "not":
                var e: [String] = []
                check(v, rule, file: file, at: path, &e)
                if e.isEmpty { errors.append("\(path): matches a schema it must not") }
            case "if":
                var e: [String] = []
                check(v, rule, file: file, at: path, &e)
                if let branch = e.isEmpty ? schema["then"] : schema["else"] {
                    check(v, branch, file: file, at: path, &errors)
                }
            case "then", "else": continue
            default:
                errors.append("\(path): keyword \(key) is not supported by the test validator")
            }
        }
    }

    private static func number(_ v: JSONValue) -> Double? {
        if case .number = v { return v.doubleValue }
        return nil
    }

    private static func hasType(_ v: JSONValue, _ type: String) -> Bool {
        switch (type, v) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object): true
        case ("number", .number): true
        case ("integer", .number(let text)): Int64(text) != nil
        default: false
        }
    }

    private static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        if case .number = a, case .number = b { return a.doubleValue == b.doubleValue }
        return a == b
    }
}
