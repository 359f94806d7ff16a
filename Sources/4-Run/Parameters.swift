// How the graph declares and receives its parameters: every layer asks a scope for its tensors by checkpoint
// key, next to the property it fills. The same construction run without weights lists what the graph expects.

import AmusedTensors

/// Errors from building or running the model graph.
public enum ModelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A parameter the graph needs is not among the weights.
    case missingParameter(String)
    /// A parameter has a different shape than the config implies.
    case shapeMismatch(key: String, expected: [Int], found: [Int])
    /// A parameter is not float32 contiguous (binding converts; this means a caller skipped binding).
    case notFloat32(String)
    /// A config value is missing, of the wrong type or unsupported.
    case invalidConfig(String)
    /// Inputs have the wrong shape or values.
    case invalidInput(String)

    /// A message naming the key or field and what to do.
    public var description: String {
        switch self {
        case .missingParameter(let key): "missing parameter \(key): the checkpoint does not provide it"
        case let .shapeMismatch(key, expected, found):
            "parameter \(key) has shape \(describeShape(found)) but the config implies \(describeShape(expected))"
        case .notFloat32(let key): "parameter \(key) is not contiguous float32; bind weights before building the model"
        case .invalidConfig(let message): "invalid config: \(message)"
        case .invalidInput(let message): "invalid input: \(message)"
        }
    }
}

/// A parameter the graph expects: its checkpoint key and shape.
public struct ParameterSpec: Sendable, Equatable, CustomStringConvertible {
    /// Full checkpoint key (diffusers / transformers naming).
    public let key: String
    /// Expected shape.
    public let shape: [Int]
    /// `key [shape]`.
    public var description: String { "\(key) \(describeShape(shape))" }
}

/// Float32 weights by key, as produced by binding.
public struct Weights: Sendable {
    /// The tensors, each contiguous float32.
    public let tensors: [String: Tensor]

    /// Wraps `tensors`; every tensor must be contiguous float32.
    public init(_ tensors: [String: Tensor]) throws(ModelError) {
        for (key, t) in tensors where t.dtype != .f32 || !t.isContiguous { throw .notFloat32(key) }
        self.tensors = tensors
    }
}

/// A bound parameter: its shape and a pointer to its float32 values (nil while only listing parameters).
public struct Param: @unchecked Sendable {
    /// The checkpoint key.
    public let key: String
    /// The shape.
    public let shape: [Int]
    let tensor: Tensor?

    /// The values. Only valid on a bound graph.
    @inline(__always) public var p: UnsafePointer<Float> {
        (tensor!.storage.baseAddress + tensor!.byteOffset).assumingMemoryBound(to: Float.self)
    }
}

/// Hands out parameters under a key prefix, either recording what is asked for or serving it from `Weights`.
public final class ParameterScope {
    final class Ledger {
        var specs: [ParameterSpec] = []
    }

    let prefix: String
    let weights: Weights?
    let ledger: Ledger

    /// A scope that only records the parameters asked for.
    public static func collecting() -> ParameterScope { ParameterScope(prefix: "", weights: nil, ledger: Ledger()) }

    /// A scope that serves parameters from `weights`, optionally under `prefix` (for example `"transformer."`).
    public static func binding(_ weights: Weights, prefix: String = "") -> ParameterScope {
        ParameterScope(prefix: prefix, weights: weights, ledger: Ledger())
    }

    init(prefix: String, weights: Weights?, ledger: Ledger) {
        self.prefix = prefix
        self.weights = weights
        self.ledger = ledger
    }

    /// Every parameter asked for so far, in the order the graph declares them.
    public var specs: [ParameterSpec] { ledger.specs }

    /// The scope for child module `name` (`"down_block"`, `"0"`, …).
    public func child(_ name: String) -> ParameterScope {
        ParameterScope(prefix: prefix + name + ".", weights: weights, ledger: ledger)
    }

    /// The parameter `key` of this scope, with the shape the config implies.
    public func param(_ key: String, _ shape: [Int]) throws(ModelError) -> Param {
        let full = prefix + key
        ledger.specs.append(ParameterSpec(key: full, shape: shape))
        guard let weights else { return Param(key: full, shape: shape, tensor: nil) }
        guard let t = weights.tensors[full] else { throw .missingParameter(full) }
        guard t.shape == shape else { throw .shapeMismatch(key: full, expected: shape, found: t.shape) }
        return Param(key: full, shape: shape, tensor: t)
    }

    /// `key` when `present`, else nil (optional biases and norm gains).
    public func param(_ key: String, _ shape: [Int], if present: Bool) throws(ModelError) -> Param? {
        present ? try param(key, shape) : nil
    }
}
