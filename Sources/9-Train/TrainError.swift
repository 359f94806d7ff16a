// The one error type of the training stage.
import Foundation

/// A training run that cannot start or continue: bad options, an image or checkpoint that does not fit the model.
public struct TrainError: Error, LocalizedError, Equatable, Sendable, CustomStringConvertible {
    /// The same as `description` (what the command line prints).
    public var errorDescription: String? { description }

    /// What went wrong and what to do, naming the file or option.
    public let message: String

    /// An error with `message`.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }
}
