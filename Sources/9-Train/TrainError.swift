// The one error type of the training stage.

/// A training run that cannot start or continue: bad options, an image or checkpoint that does not fit the model.
public struct TrainError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong and what to do, naming the file or option.
    public let message: String

    /// An error with `message`.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }
}
