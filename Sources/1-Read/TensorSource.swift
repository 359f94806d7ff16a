// What every reader offers: a list of tensors described without reading them, and zero-copy access by name.

import AmusedCore

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

    /// Number of elements (cannot overflow: `init` checked the shape).
    public var elementCount: Int { shape.reduce(1, *) }

    /// A description of a tensor `name` of `dtype` and `shape` stored at `fileOffset` in `path`; fails when the
    /// shape's element or byte count does not fit in 64 bits, so nothing derived from it later can overflow.
    public init(name: String, dtype: DType, shape: [Int], fileOffset: Int, byteCount: Int, path: String)
        throws(ReadError)
    {
        guard SizeMath.byteCount(shape: shape, dtype: dtype) != nil else {
            throw ReadError(
                .arithmeticOverflow, path: path, offset: fileOffset, field: name,
                "shape \(describeShape(shape)) of \(dtype.rawValue) overflows 64 bits")
        }
        self.init(checked: name, dtype, shape, fileOffset, byteCount, path)
    }

    /// A description of `tensor` (whose shape `Tensor.init` checked) as stored at `fileOffset` in `path`.
    public init(name: String, tensor: Tensor, fileOffset: Int = 0, path: String) {
        self.init(checked: name, tensor.dtype, tensor.shape, fileOffset, tensor.byteCount, path)
    }

    /// This description under another name, in another file or at another offset (the shape stays checked).
    public func renamed(_ name: String, fileOffset: Int? = nil, path: String? = nil) -> TensorInfo {
        TensorInfo(checked: name, dtype, shape, fileOffset ?? self.fileOffset, byteCount, path ?? self.path)
    }

    private init(
        checked name: String, _ dtype: DType, _ shape: [Int], _ fileOffset: Int, _ byteCount: Int,
        _ path: String
    ) {
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
