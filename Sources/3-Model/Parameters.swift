// How the graph declares and receives its parameters: every layer asks a scope for its tensors by checkpoint
// key, next to the property it fills. The same construction run without weights lists what the graph expects.

import AmusedCore
import AmusedKernels
import Foundation

/// Errors from building or running the model graph.
public enum ModelError: Error, LocalizedError, Equatable, Sendable, CustomStringConvertible {
    /// The same as `description` (what the command line prints).
    public var errorDescription: String? { description }

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
        case .shapeMismatch(let key, let expected, let found):
            "parameter \(key) has shape \(describeShape(found)) but the config implies \(describeShape(expected))"
        case .notFloat32(let key): "parameter \(key) is not contiguous float32; bind weights before building the model"
        case .invalidConfig(let message): "invalid config: \(message)"
        case .invalidInput(let message): "invalid input: \(message)"
        }
    }
}

/// How the graph consumes a parameter, which decides the stored forms it can run from directly.
public enum ParameterUse: String, Sendable, Equatable, CaseIterable {
    /// The weight of a matrix product (`nn.Linear`, and 1×1 convolutions run as one): rows are output channels.
    case linear
    /// The weight of a k×k convolution [out, in, kh, kw] (dense groups): rows are output channels.
    case conv
    /// A lookup table read a row at a time (token and position embeddings).
    case embedding
    /// Anything read value by value (norm gains, biases, depthwise kernels, the VQ codebook's distance search):
    /// always float32 at run time.
    case other
}

/// A parameter the graph expects: its checkpoint key and shape.
public struct ParameterSpec: Sendable, Equatable, CustomStringConvertible {
    /// Full checkpoint key (diffusers / transformers naming).
    public let key: String
    /// Expected shape.
    public let shape: [Int]
    /// How the graph uses it.
    public var use: ParameterUse = .other
    /// `key [shape]`.
    public var description: String { "\(key) \(describeShape(shape))" }
}

/// Weights by key, as produced by binding: float32 tensors, and quantized ones the graph runs from directly.
public struct Weights: Sendable {
    /// The float32 tensors, each contiguous.
    public let tensors: [String: Tensor]
    /// Tensors kept in a quantized form (`QuantScheme`); a key is in one dictionary or the other.
    public let quantized: [String: QuantizedTensor]

    /// Wraps `tensors` (each contiguous float32) and `quantized`.
    public init(_ tensors: [String: Tensor], quantized: [String: QuantizedTensor] = [:]) throws(ModelError) {
        for (key, t) in tensors where t.dtype != .f32 || !t.isContiguous { throw .notFloat32(key) }
        if let key = quantized.keys.first(where: { tensors[$0] != nil }) {
            throw .invalidInput("\(key) is given both as float32 and quantized")
        }
        self.tensors = tensors
        self.quantized = quantized
    }

    /// Number of weights.
    public var count: Int { tensors.count + quantized.count }

    /// Shape of `key` in either form.
    public func shape(of key: String) -> [Int]? { tensors[key]?.shape ?? quantized[key]?.shape }
}

/// A bound parameter: its shape and its values, float32 (`p`) or quantized (`quantized`, for linear, convolution
/// and embedding weights); neither while only listing parameters.
public struct Param: @unchecked Sendable {
    /// The checkpoint key.
    public let key: String
    /// The shape.
    public let shape: [Int]
    let tensor: Tensor?
    /// The stored form when the weight runs quantized (then `p` is unavailable).
    public let quantized: QuantizedTensor?

    init(key: String, shape: [Int], tensor: Tensor?, quantized: QuantizedTensor? = nil) {
        self.key = key
        self.shape = shape
        self.tensor = tensor
        self.quantized = quantized
    }

    /// The float32 values. Only valid on a bound graph, for a parameter that is not quantized.
    @inline(__always) public var p: UnsafePointer<Float> {
        (tensor!.storage.baseAddress + tensor!.byteOffset).assumingMemoryBound(to: Float.self)
    }

    /// Writes rows `range` (of the matrix view [shape[0], rest]) as float32 into `out`, whatever the stored form.
    public func rows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        if let quantized {
            quantized.dequantizeRows(range, into: out)
        } else {
            let columns = shape.dropFirst().reduce(1, *)
            out.update(from: p + range.lowerBound * columns, count: range.count * columns)
        }
    }

    /// Runs `body` with all values as float32: the tensor itself when it is float32, else a pooled scratch buffer
    /// the weight is widened into, in parallel bands of rows (weights stay quantized in memory between uses).
    public func withFloats<R>(_ body: (UnsafePointer<Float>) -> R) -> R {
        guard let quantized else { return body(p) }
        return Kernels.withScratch(quantized.elementCount) { scratch in
            let columns = quantized.columns
            let out = SharedPointer(scratch)
            Parallel.chunks(quantized.rows, cost: columns) { range in
                quantized.dequantizeRows(range, into: out.p + range.lowerBound * columns)
            }
            return body(UnsafePointer(scratch))
        }
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

    /// The parameter `key` of this scope, with the shape the config implies, used as `use` says. A quantized
    /// weight stays quantized for linear, convolution and embedding uses; for any other use it is widened to float32
    /// here, once.
    public func param(_ key: String, _ shape: [Int], use: ParameterUse = .other) throws(ModelError) -> Param {
        let full = prefix + key
        ledger.specs.append(ParameterSpec(key: full, shape: shape, use: use))
        guard let weights else { return Param(key: full, shape: shape, tensor: nil) }
        if let q = weights.quantized[full] {
            guard q.shape == shape else { throw .shapeMismatch(key: full, expected: shape, found: q.shape) }
            if use != .other { return Param(key: full, shape: shape, tensor: nil, quantized: q) }
            do {
                return Param(key: full, shape: shape, tensor: try q.dequantized())
            } catch {
                throw .invalidInput("\(full): \(error)")
            }
        }
        guard let t = weights.tensors[full] else { throw .missingParameter(full) }
        guard t.shape == shape else { throw .shapeMismatch(key: full, expected: shape, found: t.shape) }
        return Param(key: full, shape: shape, tensor: t)
    }

    /// `key` when `present`, else nil (optional biases and norm gains).
    public func param(_ key: String, _ shape: [Int], if present: Bool, use: ParameterUse = .other)
        throws(ModelError) -> Param?
    {
        present ? try param(key, shape, use: use) : nil
    }
}
