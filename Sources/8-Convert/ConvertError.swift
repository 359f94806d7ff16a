// The convert stage's error: an output that cannot be written where it was asked for. What goes wrong with the
// input surfaces as the earlier stages' errors (ReadError, MapError, BindError, QuantizeError, VerifyError,
// BundleError), each naming its file and key.

import AmusedCore
import Foundation

/// The one error type of the convert stage.
public struct ConvertError: Error, DescribedError, Equatable {
    /// What kind of problem.
    public enum Kind: String, Sendable {
        /// The output path exists already, or cannot be created, written or moved into place.
        case output
    }

    /// The kind.
    public let kind: Kind
    /// The file or folder concerned.
    public let path: String
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(_ kind: Kind, path: String, _ message: String) {
        self.kind = kind
        self.path = path
        self.message = message
    }

    /// The kind's name.
    public var kindName: String? { kind.rawValue }
    /// What to do.
    public var advice: String {
        switch kind {
        case .output: "Choose a new output path in a writable folder; nothing was written."
        }
    }
}
