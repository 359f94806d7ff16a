// Binding: a checkpoint's tensors onto the graph's parameters, strictly. Every parameter the config implies must
// be present with its exact shape; every tensor in the file must be used (or dropped by a named rule); float16 and
// bfloat16 are widened to float32; float32 stays a zero-copy view of the mapped file.

import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

/// The one error type of the bind stage.
public struct BindError: Error, DescribedError, Equatable {
    /// What kind of mismatch.
    public enum Kind: String, Sendable {
        /// The graph needs a tensor the checkpoint lacks.
        case missing
        /// The checkpoint has a tensor the graph does not use.
        case unused
        /// A tensor has the wrong shape.
        case shape
        /// A tensor's dtype cannot be used as weights.
        case dtype
        /// A config is missing, unreadable or unsupported.
        case config
        /// Tokenizer files are missing or malformed.
        case tokenizer
        /// A LoRA file is malformed or does not fit the model.
        case lora
    }

    /// The kind.
    public let kind: Kind
    /// The file or folder concerned.
    public let path: String
    /// The key or config field concerned.
    public let key: String?
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(_ kind: Kind, path: String, key: String? = nil, _ message: String) {
        self.kind = kind
        self.path = path
        self.key = key
        self.message = message
    }

    /// The key, as the message names it.
    public var field: String? { key }
    /// The kind's name.
    public var kindName: String? { kind.rawValue }
    /// What to do.
    public var advice: String {
        switch kind {
        case .missing, .unused, .shape:
            "The checkpoint does not match its config; check that config.json belongs to these weights."
        case .dtype: "Convert the weights to float32, float16 or bfloat16."
        case .config: "Fix the config file or use the one shipped with the checkpoint."
        case .tokenizer: "The tokenizer/ folder needs vocab.json and merges.txt from the same checkpoint."
        case .lora:
            "Pass the pytorch_lora_weights.safetensors written for this base model by diffusers' save_lora_weights."
        }
    }
}

/// The result of binding: weights ready for the graph.
public struct BoundWeights: Sendable {
    /// Float32 weights by key.
    public let weights: Weights
    /// How many float32 tensors are zero-copy views of the mapped file.
    public let zeroCopy: Int
}

/// Binds `source`'s tensors to `specs`, strictly: missing, unused, wrong-shape and unusable-dtype tensors are errors
/// naming the key. (Renames, drops and prefixes are the name maps' job, before binding.)
public func bind(_ source: any TensorSource, to specs: [ParameterSpec]) throws(BindError) -> BoundWeights {
    var byName: [String: TensorInfo] = [:]
    for info in source.infos { byName[info.name] = info }
    let wanted = Set(specs.map(\.key))
    if let unused = byName.keys.sorted().first(where: { !wanted.contains($0) }) {
        let count = byName.keys.filter { !wanted.contains($0) }.count
        throw BindError(
            .unused, path: source.path, key: unused,
            "the graph has no parameter of this name (\(count) unused tensor\(count == 1 ? "" : "s") in all)")
    }
    var tensors: [String: Tensor] = [:]
    var zeroCopy = 0
    for spec in specs {
        guard let info = byName[spec.key] else {
            throw BindError(
                .missing, path: source.path, key: spec.key,
                "the config implies this parameter with shape \(describeShape(spec.shape)) but the file lacks it")
        }
        guard info.shape == spec.shape else {
            throw BindError(
                .shape, path: source.path, key: spec.key,
                "shape \(describeShape(info.shape)) in the file, \(describeShape(spec.shape)) implied by the config")
        }
        guard [.f32, .f16, .bf16, .f64].contains(info.dtype) else {
            throw BindError(.dtype, path: source.path, key: spec.key, "\(info.dtype.rawValue) weights are not usable")
        }
        do {
            let t = try source.tensor(named: info.name)
            let aligned = Int(bitPattern: t.storage.baseAddress + t.byteOffset) % 4 == 0
            if t.dtype == .f32 && t.isContiguous && aligned {
                tensors[spec.key] = t
                zeroCopy += 1
            } else {
                tensors[spec.key] = try t.converted(to: .f32)
            }
        } catch let error as ReadError {
            throw BindError(.dtype, path: source.path, key: spec.key, error.errorDescription ?? "\(error)")
        } catch {
            throw BindError(.dtype, path: source.path, key: spec.key, "\(error)")
        }
    }
    do {
        return BoundWeights(weights: try Weights(tensors), zeroCopy: zeroCopy)
    } catch {
        throw BindError(.dtype, path: source.path, "\(error)")
    }
}
