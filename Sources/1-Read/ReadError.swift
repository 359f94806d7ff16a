// The one error type of the read stage: a family, the file, where in it, and what to do.

import AmusedCore
import Foundation

/// What went wrong while reading a weights file, with the file, the byte offset and the field it concerns.
public struct ReadError: Error, DescribedError, Equatable {
    /// The error families of `docs/hostile-inputs.md`, stable across versions.
    public enum Family: String, Sendable, Codable {
        /// The file ends before a structure it declares.
        case truncated
        /// A declared size is beyond what this reader accepts.
        case limitExceeded
        /// A size computation overflows 64 bits.
        case arithmeticOverflow
        /// The bytes do not follow the format's grammar.
        case malformed
        /// Parts of the file contradict each other (offsets, sizes, indexes).
        case inconsistent
        /// Valid, but a feature or type this reader does not support.
        case unsupported
        /// Refused by security policy (code execution, external references).
        case forbidden
        /// A checksum or digest does not match.
        case integrity
        /// The operating system failed to read the file.
        case io
    }

    /// The family, for programs and tests.
    public let family: Family
    /// The file the error is about.
    public let path: String
    /// Byte offset in the file, where one applies.
    public let offset: Int?
    /// The tensor name, key or field concerned, where one applies.
    public let field: String?
    /// What is wrong, in words.
    public let message: String

    /// Creates an error; `offset` and `field` locate it when known.
    public init(_ family: Family, path: String, offset: Int? = nil, field: String? = nil, _ message: String) {
        self.family = family
        self.path = path
        self.offset = offset
        self.field = field
        self.message = message
    }

    /// The family's name.
    public var kindName: String? { family.rawValue }

    /// What to do, by family.
    public var advice: String {
        switch family {
        case .truncated: "The file is incomplete: download or copy it again."
        case .limitExceeded: "The file declares more than this reader accepts; it is damaged or not a weights file."
        case .arithmeticOverflow: "The declared sizes cannot be real; the file is damaged or hostile."
        case .malformed: "The file is damaged or not in the format its name says; re-export it."
        case .inconsistent: "Parts of the file disagree; re-export it with the original tool."
        case .unsupported: "Convert it to a supported form (for example safetensors with F32/F16/BF16) first."
        case .forbidden: "AmusedKit never executes or follows references in weight files; re-export the plain tensors."
        case .integrity: "The bytes do not match their checksum; the file was corrupted."
        case .io: "Check the path and permissions (and, when writing, the free space and any file-size limit)."
        }
    }

    /// Wraps a tensor-layer error about `path`.
    public static func from(_ error: TensorError, path: String, field: String? = nil) -> ReadError {
        switch error {
        case .io(_, let message), .write(_, let message): ReadError(.io, path: path, field: field, message)
        case .fileChanged(_, let expected, let actual):
            ReadError(
                .io, path: path, field: field,
                "the file changed size while open (\(expected) bytes when opened, \(actual) now)")
        case .unsupportedConversion, .invalidView: ReadError(.inconsistent, path: path, field: field, error.description)
        }
    }
}
