// What every reader offers: a list of tensors described without reading them, and zero-copy access by name.

import AmusedTensors

/// A tensor described by a file's index, before any of its bytes are read.
public struct TensorInfo: Sendable, Equatable {
    /// The name as stored in the file.
    public let name: String
    /// Element type.
    public let dtype: DType
    /// Dimensions.
    public let shape: [Int]
    /// Absolute byte offset of the data in its file.
    public let fileOffset: Int
    /// Bytes of data.
    public let byteCount: Int
    /// The file holding the data.
    public let path: String

    /// Number of elements.
    public var elementCount: Int { shape.reduce(1, *) }

    /// A description of a tensor `name` of `dtype` and `shape` stored at `fileOffset` in `path`.
    public init(name: String, dtype: DType, shape: [Int], fileOffset: Int, byteCount: Int, path: String) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.fileOffset = fileOffset
        self.byteCount = byteCount
        self.path = path
    }
}

/// A set of named tensors read from one or more files.
public protocol TensorSource: Sendable {
    /// The file or index this source was opened from.
    var path: String { get }
    /// The format it was read from.
    var format: WeightFormat { get }
    /// Every tensor, in the order the file lists them.
    var infos: [TensorInfo] { get }
    /// The tensor called `name`, viewing the file's bytes where the format allows it.
    func tensor(named name: String) throws(ReadError) -> Tensor
}

extension TensorSource {
    /// Every tensor name, in file order.
    public var names: [String] { infos.map(\.name) }
    /// Total bytes of tensor data.
    public var totalBytes: Int { infos.reduce(0) { $0 + $1.byteCount } }
    /// Total number of elements (parameters).
    public var totalElements: Int { infos.reduce(0) { $0 + $1.elementCount } }
}
