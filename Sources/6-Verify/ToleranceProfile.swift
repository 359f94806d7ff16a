// Tolerance profiles: the thresholds a check passes against, one profile per precision, each value with its reason.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

/// Thresholds a check passes against, from `tolerance-profiles.json` (each with the reason for its value).
public struct ToleranceProfile: Sendable {
    /// The profile's name (`fp32`, …).
    public let name: String
    /// Threshold by key (`transformer_max_abs_relative`, …).
    public let thresholds: [String: Double]

    /// The threshold `key` when the profile defines it.
    public func optional(_ key: String) -> Double? { thresholds[key] }

    /// The threshold `key`.
    public func value(_ key: String) throws -> Double {
        guard let v = thresholds[key] else {
            throw VerifyError(path: "tolerance-profiles.json", field: key, "profile \(name) lacks it")
        }
        return v
    }

    /// Loads profile `name` from the shipped profiles file, or from `file` when given.
    public static func load(_ name: String, file: String? = nil) throws -> ToleranceProfile {
        let path =
            file ?? Bundle.module.path(forResource: "tolerance-profiles", ofType: "json") ?? "tolerance-profiles.json"
        let root = try Checkpoint.readJSON(path)
        guard let profile = root["profiles"]?[name]?.objectValue else {
            let known = root["profiles"]?.objectValue?.keys.joined(separator: ", ") ?? ""
            throw VerifyError(path: path, field: name, "no such tolerance profile (known: \(known))")
        }
        var thresholds: [String: Double] = [:]
        for (key, entry) in profile.entries {
            if let v = entry["value"]?.doubleValue { thresholds[key] = v }
        }
        return ToleranceProfile(name: name, thresholds: thresholds)
    }
}
