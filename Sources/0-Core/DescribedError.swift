// The shape every stage's error shares: the file concerned, and within it a key or field and a byte offset where they
// apply; what is wrong; what kind of problem it is; and what to do about it. Each error type gives those parts and
// its advice; the message is composed here once, so all of them read alike.

import Foundation

/// An error that names where the problem is and says what to do:
/// `path [field] at byte N: message (kind). advice`, parts left out where they do not apply.
public protocol DescribedError: LocalizedError, Sendable {
    /// The file, folder or other source concerned.
    var path: String { get }
    /// The key, field or tensor within it, where one applies.
    var field: String? { get }
    /// The byte offset within it, where one applies.
    var offset: Int? { get }
    /// What is wrong.
    var message: String { get }
    /// The kind of problem (a family such as `truncated`), where the type has kinds.
    var kindName: String? { get }
    /// What to do about it.
    var advice: String { get }
}

extension DescribedError {
    /// No field unless the type has one.
    public var field: String? { nil }
    /// No offset unless the type has one.
    public var offset: Int? { nil }
    /// No kind unless the type has kinds.
    public var kindName: String? { nil }

    /// `path [field] at byte N: message (kind). advice`.
    public var errorDescription: String? {
        var s = path + (field.map { " [\($0)]" } ?? "") + (offset.map { " at byte \($0)" } ?? "")
        s += ": " + message + (kindName.map { " (\($0))" } ?? "") + ". " + advice
        return s
    }
}
