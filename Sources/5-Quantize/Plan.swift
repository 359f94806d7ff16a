// The quantization plan: every graph parameter of every component with the scheme a policy gives it, why, and the
// bytes it will take — resolved from names, shapes and uses before any tensor is read, so a conversion can print it
// and refuse a bad policy before it writes anything.

import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

/// One tensor of the plan.
public struct PlannedTensor: Sendable {
    /// The component (`transformer`, `text_encoder`, `vqvae`).
    public let component: String
    /// The parameter (canonical diffusers / transformers name).
    public let spec: ParameterSpec
    /// The chosen scheme.
    public let scheme: QuantScheme
    /// Why: the deciding rule's reason (and the fallback's cause, when one was taken).
    public let reason: String
    /// Index of the deciding rule in the policy.
    public let rule: Int
    /// Bytes it takes in the bundle.
    public let bytes: Int
    /// Bytes it takes as float32.
    public var float32Bytes: Int { spec.shape.reduce(1, *) * 4 }

    /// How its products are computed: int8 weights of linear layers (`Linear`: the text encoder's and transformer's
    /// linear weights and the transformer's 1×1 convolutions; int4 ones re-expressed as int8 at binding) multiply in
    /// int8 against activations quantized per row where the CPU has integer dot products
    /// (`Kernels.int8Compute`), bfloat16 ones in bfloat16 where it has AVX512_BF16 (`Kernels.bf16Compute`) — widened
    /// to float32 elsewhere; every other weight computes in float32.
    public var products: String { Self.products(component: component, use: spec.use, scheme: scheme) }

    /// The `products` of a tensor of `component` used as `use` and stored as `scheme` (bundle manifests record it).
    public static func products(component: String, use: ParameterUse, scheme: QuantScheme) -> String {
        // Linear weights and the transformer's 1×1 convolutions run through `Linear`; the VQ-GAN's convolutions,
        // 1×1 ones included, through `Conv2d`, which widens.
        guard use == .linear, component != "vqvae" else { return "f32" }
        switch scheme {
        case .int8: return "int8·int8→int32"
        case .int4: return "int8·int8→int32 (int4 re-expressed as int8)"
        case .bf16: return "bf16·bf16→f32"
        default: return "f32"
        }
    }
}

/// The plan of a whole conversion.
public struct QuantPlan: Sendable {
    /// The policy it was resolved from.
    public let policy: QuantPolicy
    /// Every tensor, component by component in graph order.
    public let tensors: [PlannedTensor]

    /// Resolves `policy` over the parameters of each component (in the order given).
    public init(policy: QuantPolicy, components: [(name: String, specs: [ParameterSpec])]) throws {
        var tensors: [PlannedTensor] = []
        for (component, specs) in components {
            for spec in specs {
                guard let i = policy.rules.firstIndex(where: { $0.matches(component: component, spec: spec) }) else {
                    throw QuantizeError(
                        path: policy.name, field: "\(component)/\(spec.key)",
                        "no rule of the policy matches this tensor (\(spec.use.rawValue), shape "
                            + "\(describeShape(spec.shape))); end the rules with a catch-all")
                }
                let rule = policy.rules[i]
                var scheme = rule.scheme, reason = rule.reason
                if let why = Self.refusal(rule.scheme, spec) {
                    guard let fallback = rule.fallback, Self.refusal(fallback, spec) == nil else {
                        throw QuantizeError(
                            path: policy.name, field: "\(component)/\(spec.key)",
                            "rule \(i) gives \(rule.scheme), but \(why), and the rule has no usable fallback")
                    }
                    scheme = fallback
                    reason += "; \(rule.scheme) → \(fallback): \(why)"
                }
                tensors.append(
                    PlannedTensor(
                        component: component, spec: spec, scheme: scheme, reason: reason, rule: i,
                        bytes: scheme.byteCount(for: spec.shape)!))
            }
        }
        self.policy = policy
        self.tensors = tensors
    }

    /// Why `scheme` cannot store `spec` for the graph to run from, or nil when it can.
    static func refusal(_ scheme: QuantScheme, _ spec: ParameterSpec) -> String? {
        switch scheme {
        case .f32, .f16, .bf16: return nil
        case .int8:
            guard [.linear, .conv, .embedding].contains(spec.use) else {
                return "int8 is for linear, convolution and embedding weights (this is read value by value)"
            }
        case .int4(let g):
            guard spec.use == .linear else {
                return "int4 is for linear weights (this is a \(spec.use.rawValue) weight)"
            }
            let columns = QuantizedTensor.matrix(spec.shape).columns
            guard columns % g == 0 else { return "rows of \(columns) inputs do not split into groups of \(g)" }
        }
        return scheme.buffers(for: spec.shape) == nil ? "shape \(describeShape(spec.shape)) does not fit" : nil
    }

    /// Total bundle bytes of the tensors.
    public var bytes: Int { tensors.reduce(0) { $0 + $1.bytes } }
    /// Total float32 bytes of the tensors.
    public var float32Bytes: Int { tensors.reduce(0) { $0 + $1.float32Bytes } }

    /// The plan per tensor: component/key, shape, use, scheme, products, bytes, reason.
    public var table: String {
        var out = "tensor\tshape\tuse\tscheme\tproducts\tbytes\treason\n"
        for t in tensors {
            out +=
                "\(t.component)/\(t.spec.key)\t\(describeShape(t.spec.shape))\t\(t.spec.use.rawValue)\t\(t.scheme)\t"
                + "\(t.products)\t\(t.bytes)\t\(t.reason)\n"
        }
        return out
    }

    /// The plan grouped by component, rule and scheme: how many tensors, their bytes, and the reason.
    public var summary: String {
        struct Key: Hashable { let component: String, rule: Int, scheme: String }
        var order: [Key] = []
        var groups: [Key: (count: Int, bytes: Int, f32: Int, reason: String)] = [:]
        for t in tensors {
            let k = Key(component: t.component, rule: t.rule, scheme: t.scheme.description)
            if groups[k] == nil { order.append(k) }
            var g = groups[k] ?? (0, 0, 0, t.reason)
            g.count += 1
            g.bytes += t.bytes
            g.f32 += t.float32Bytes
            groups[k] = g
        }
        var out = "quantization plan (policy \(policy.name)):\n"
        out += "  component     scheme   tensors        bytes   (fp32 bytes)  reason\n"
        for k in order {
            let g = groups[k]!
            out +=
                "  " + k.component.padding(toLength: 13, withPad: " ", startingAt: 0) + " "
                + k.scheme.padding(toLength: 8, withPad: " ", startingAt: 0) + " "
                + String(g.count).leftPadded(7) + " " + String(g.bytes).leftPadded(12) + " "
                + ("(" + String(g.f32) + ")").leftPadded(14) + "  " + g.reason + "\n"
        }
        out +=
            "  total: \(tensors.count) tensors, \(bytes) bytes (\(String(format: "%.3f", Double(bytes) / Double(max(1, float32Bytes))))× the "
            + "\(float32Bytes) float32 bytes)\n"
        return out
    }

    /// The plan as JSON (stored in bundle manifests): the policy and one entry per tensor.
    public var json: JSONValue {
        var o = JSONObject()
        o.insert("policy", policy.json)
        o.insert(
            "tensors",
            .array(
                tensors.map { t in
                    var e = JSONObject()
                    e.insert("component", .string(t.component))
                    e.insert("key", .string(t.spec.key))
                    e.insert("shape", .array(t.spec.shape.map { .number(String($0)) }))
                    e.insert("use", .string(t.spec.use.rawValue))
                    e.insert("scheme", .string(t.scheme.description))
                    e.insert("bytes", .number(String(t.bytes)))
                    e.insert("reason", .string(t.reason))
                    return .object(e)
                }))
        return .object(o)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
