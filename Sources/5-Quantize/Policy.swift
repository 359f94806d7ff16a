// Quantization policies: ordered rules, as data (policies/*.json, schema Schemas/quant-policy.schema.json), that give
// every graph parameter a storage scheme and a reason. The first rule that matches a tensor decides; a policy that
// leaves a tensor unmatched is an error naming it. The presets are shipped policies.

import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

/// The one error type of the quantize stage.
public struct QuantizeError: Error, DescribedError, Equatable {
    /// The policy file, checkpoint or tensor concerned.
    public let path: String
    /// The rule, field or tensor key concerned.
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
        "See Schemas/quant-policy.schema.json and the shipped presets in Sources/5-Quantize/policies/."
    }
}

/// One rule of a policy: which tensors it matches and the scheme it gives them.
public struct PolicyRule: Sendable {
    /// Components it applies to (`transformer`, `text_encoder`, `vqvae`); nil: all.
    public let components: [String]?
    /// Key patterns (`*` matches any run of characters, dots included); nil: all.
    public let keys: [String]?
    /// Parameter uses it applies to; nil: all.
    public let uses: [ParameterUse]?
    /// Only tensors with at least this many elements.
    public let minElements: Int?
    /// Only tensors with at most this many elements.
    public let maxElements: Int?
    /// The scheme given.
    public let scheme: QuantScheme
    /// The scheme used when `scheme` cannot hold the tensor (int4 needs a linear weight whose row length is a multiple
    /// of the group); nil makes that an error.
    public let fallback: QuantScheme?
    /// Why, printed in the plan.
    public let reason: String

    /// Whether the rule matches a tensor.
    public func matches(component: String, spec: ParameterSpec) -> Bool {
        if let components, !components.contains(component) { return false }
        if let uses, !uses.contains(spec.use) { return false }
        let n = SizeMath.product(spec.shape) ?? Int.max  // shapes come from configs
        if let minElements, n < minElements { return false }
        if let maxElements, n > maxElements { return false }
        if let keys, !keys.contains(where: { QuantPolicy.glob($0, spec.key) }) { return false }
        return true
    }
}

/// A quantization policy: a name, a description and ordered rules.
public struct QuantPolicy: Sendable {
    /// The policy's name (a preset's name for the shipped ones).
    public let name: String
    /// What it is for.
    public let description: String
    /// The rules, first match wins.
    public let rules: [PolicyRule]
    /// The policy as read (stored in bundle manifests).
    public let json: JSONValue

    /// The shipped presets, in the order the CLI lists them.
    public static let presets = ["fp32", "fp16", "bf16", "int8", "int4", "mixed"]

    /// A shipped preset.
    public static func preset(_ name: String) throws -> QuantPolicy {
        guard presets.contains(name),
            let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "policies")
                ?? Bundle.module.url(forResource: name, withExtension: "json")
        else { throw QuantizeError(path: name, "no such preset (known: \(presets.joined(separator: ", ")))") }
        return try load(url.path)
    }

    /// Reads and validates a policy file.
    public static func load(_ path: String) throws -> QuantPolicy {
        let json: JSONValue
        do { json = try Checkpoint.readJSON(path) } catch {
            throw QuantizeError(path: path, error.errorDescription ?? "\(error)")
        }
        return try QuantPolicy(json: json, path: path)
    }

    /// Validates `json` (the schema's rules, checked here so a bad file gets a message naming the field).
    public init(json: JSONValue, path: String) throws {
        guard let root = json.objectValue else { throw QuantizeError(path: path, "a policy is a JSON object") }
        let known: Set<String> = ["format", "version", "name", "description", "rules"]
        if let k = root.keys.first(where: { !known.contains($0) }) {
            throw QuantizeError(path: path, field: k, "unknown field")
        }
        guard json["format"]?.stringValue == "amused-quant-policy" else {
            throw QuantizeError(path: path, field: "format", "must be \"amused-quant-policy\"")
        }
        guard json["version"]?.intValue == 1 else {
            throw QuantizeError(path: path, field: "version", "only version 1 is known")
        }
        guard let name = json["name"]?.stringValue, !name.isEmpty else {
            throw QuantizeError(path: path, field: "name", "a non-empty name is required")
        }
        guard let rules = json["rules"]?.arrayValue, !rules.isEmpty else {
            throw QuantizeError(path: path, field: "rules", "at least one rule is required")
        }
        var parsed: [PolicyRule] = []
        let ruleFields: Set<String> = [
            "component", "key", "use", "min_elements", "max_elements", "scheme", "fallback", "reason",
        ]
        for (i, r) in rules.enumerated() {
            let at = "rules[\(i)]"
            guard let o = r.objectValue else { throw QuantizeError(path: path, field: at, "a rule is an object") }
            if let k = o.keys.first(where: { !ruleFields.contains($0) }) {
                throw QuantizeError(path: path, field: "\(at).\(k)", "unknown field")
            }
            func strings(_ field: String) throws -> [String]? {
                guard let v = r[field] else { return nil }
                guard let a = v.arrayValue, !a.isEmpty, a.allSatisfy({ $0.stringValue != nil }) else {
                    throw QuantizeError(path: path, field: "\(at).\(field)", "must be a non-empty list of strings")
                }
                return a.compactMap(\.stringValue)
            }
            func count(_ field: String) throws -> Int? {
                guard let v = r[field] else { return nil }
                guard let n = v.intValue, n >= 0 else {
                    throw QuantizeError(path: path, field: "\(at).\(field)", "must be a non-negative integer")
                }
                return n
            }
            func scheme(_ field: String) throws -> QuantScheme? {
                guard let v = r[field] else { return nil }
                guard let s = v.stringValue.flatMap(QuantScheme.init(name:)) else {
                    throw QuantizeError(
                        path: path, field: "\(at).\(field)",
                        "unknown scheme (f32, f16, bf16, int8, int4, int4g32, int4g64, int4g128)")
                }
                return s
            }
            var uses: [ParameterUse]? = nil
            if let names = try strings("use") {
                uses = try names.map { n in
                    guard let u = ParameterUse(rawValue: n) else {
                        throw QuantizeError(
                            path: path, field: "\(at).use", "unknown use \(n) (linear, conv, embedding, other)")
                    }
                    return u
                }
            }
            guard let s = try scheme("scheme") else {
                throw QuantizeError(path: path, field: "\(at).scheme", "required")
            }
            guard let reason = r["reason"]?.stringValue, !reason.isEmpty else {
                throw QuantizeError(path: path, field: "\(at).reason", "every rule says why (a non-empty reason)")
            }
            let components = try strings("component")
            if let bad = components?.first(where: { !["transformer", "text_encoder", "vqvae"].contains($0) }) {
                throw QuantizeError(
                    path: path, field: "\(at).component", "unknown component \(bad) (transformer, text_encoder, vqvae)")
            }
            parsed.append(
                PolicyRule(
                    components: components, keys: try strings("key"), uses: uses,
                    minElements: try count("min_elements"), maxElements: try count("max_elements"),
                    scheme: s, fallback: try scheme("fallback"), reason: reason))
        }
        self.name = name
        self.description = json["description"]?.stringValue ?? ""
        self.rules = parsed
        self.json = json
    }

    /// The policy with every int4 scheme (and fallback) using groups of `group` inputs: the JSON is edited and
    /// parsed again, so the rules and the JSON stored in manifests cannot disagree.
    public func withInt4Group(_ group: Int) throws -> QuantPolicy {
        var root = json.objectValue ?? JSONObject()
        let rules = (root["rules"]?.arrayValue ?? []).map { rule -> JSONValue in
            guard var o = rule.objectValue else { return rule }
            for field in ["scheme", "fallback"] {
                if let s = o[field]?.stringValue, s.hasPrefix("int4") { o.set(field, .string("int4g\(group)")) }
            }
            if let r = o["reason"]?.stringValue {
                o.set("reason", .string(r.replacingOccurrences(of: "groups of 64", with: "groups of \(group)")))
            }
            return .object(o)
        }
        root.set("rules", .array(rules))
        return try QuantPolicy(json: .object(root), path: name)
    }

    /// Whether `pattern` (with `*` wildcards) matches all of `text`.
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8), t = Array(text.utf8)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count && p[pi] != UInt8(ascii: "*") && p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}
