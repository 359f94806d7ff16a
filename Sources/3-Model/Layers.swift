// The building blocks every component shares: linear, convolution, norms, attention. Activations are row-major
// float32 arrays; transformer-side tensors are [rows, features], VQ-side images are NCHW.

import AmusedCore
import AmusedKernels

/// Named intermediate activations recorded during a forward pass, for layer bisection (`verify --trace`).
public final class Trace {
    /// Recorded activations: name, shape, values, in the order they were produced.
    public private(set) var entries: [(name: String, shape: [Int], values: [Float])] = []
    /// Records only names that start with one of these prefixes (all when empty).
    public let filter: [String]

    /// A trace recording every name starting with one of `filter` (everything when empty).
    public init(filter: [String] = []) { self.filter = filter }

    /// Records `values` of `shape` under `name`.
    public func record(_ name: String, _ values: [Float], _ shape: [Int]) {
        if filter.isEmpty || filter.contains(where: name.hasPrefix) { entries.append((name, shape, values)) }
    }
}

/// `nn.Linear`: y = x · Wᵀ + b with W stored [out, in].
struct Linear: Sendable {
    let weight: Param
    let bias: Param?
    let inFeatures: Int
    let outFeatures: Int
    /// An int4 weight re-expressed as int8 per output channel, made once at binding when products run in int8
    /// (`QuantizedTensor.int4AsInt8`): int4 computes through the int8 kernel.
    let int4AsInt8: QuantizedTensor?

    init(_ scope: ParameterScope, in inFeatures: Int, out outFeatures: Int, bias: Bool) throws(ModelError) {
        self.init(
            weight: try scope.param("weight", [outFeatures, inFeatures], use: .linear),
            bias: try scope.param("bias", [outFeatures], if: bias), inFeatures: inFeatures,
            outFeatures: outFeatures)
    }

    init(weight: Param, bias: Param?, inFeatures: Int, outFeatures: Int) {
        self.weight = weight
        self.bias = bias
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.int4AsInt8 = Kernels.int8Compute != .widened ? weight.quantized?.int4AsInt8() : nil
    }

    /// Applies the layer to `rows` rows of `x`.
    func callAsFunction(_ x: [Float], rows: Int) -> [Float] {
        // Every path of `apply` writes every output (the products store with beta = 0), so the array is not zeroed
        // first: for the output layer that was a 16 MB memset per guided step.
        [Float](unsafeUninitializedCapacity: rows * outFeatures) { y, count in
            if let out = y.baseAddress {
                x.withUnsafeBufferPointer { xp in apply(xp.baseAddress!, rows: rows, into: out, ldy: outFeatures) }
            }
            count = rows * outFeatures
        }
    }

    /// Writes `rows` outputs into `y` with row stride `ldy` (so several projections can fill one wide buffer).
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard rows > 0 else { return }
        // An int8 weight (or an int4 one, re-expressed as int8 at binding) multiplies in int8 where the CPU has integer
        // dot products (activations quantized per row, exact int32 sums; Kernels.int8Compute), the bias added in the
        // same pass.
        if let (values, scales) = weight.quantized?.int8Storage ?? int4AsInt8?.int8Storage,
            Kernels.int8Compute != .widened
        {
            Kernels.int8Linear(
                m: rows, n: outFeatures, k: inFeatures, x: x, weight: values, scales: scales, bias: bias?.p, y: y,
                ldy: ldy)
            return
        }
        // A bfloat16 weight multiplies in bfloat16 where the CPU has AVX512_BF16 (activations rounded to bfloat16,
        // float32 sums; Kernels.bf16Compute).
        if let values = weight.quantized?.bf16Storage, Kernels.bf16Compute {
            Kernels.bf16Linear(
                m: rows, n: outFeatures, k: inFeatures, x: x, weight: values, bias: bias?.p, y: y, ldy: ldy)
            return
        }
        // Otherwise a quantized weight is widened into a pooled buffer for the product, so it stays small in memory.
        weight.withFloats { w in
            Kernels.sgemm(
                m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: w, ldb: inFeatures,
                transposeB: true, c: y, ldc: ldy)
        }
        if let bias { Kernels.addBias(y, rows: rows, dim: outFeatures, ldy: ldy, bias: bias.p) }
    }
}

/// `nn.Conv2d` over one NCHW image at a time (groups = 1).
struct Conv2d: Sendable {
    let weight: Param
    let bias: Param?
    let inChannels: Int
    let outChannels: Int
    let kernel: Int
    let stride: Int
    let padding: Kernels.Padding

    init(
        _ scope: ParameterScope, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int = 1,
        padding: Kernels.Padding = .same(0), bias: Bool
    ) throws(ModelError) {
        self.weight = try scope.param(
            "weight", [outChannels, inChannels, kernel, kernel],
            use: kernel == 1 ? .linear : .conv)
        self.bias = try scope.param("bias", [outChannels], if: bias)
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
    }

    func outputSize(height: Int, width: Int) -> (Int, Int) {
        (
            Kernels.convOutputSize(
                height, kernel: kernel, stride: stride, padBefore: padding.top, padAfter: padding.bottom),
            Kernels.convOutputSize(
                width, kernel: kernel, stride: stride, padBefore: padding.left, padAfter: padding.right)
        )
    }

    /// Applies the convolution to a batch of NCHW images; returns the output and its spatial size.
    func callAsFunction(_ x: [Float], batch: Int, height: Int, width: Int) -> (values: [Float], height: Int, width: Int)
    {
        let (ho, wo) = outputSize(height: height, width: width)
        var y = [Float](repeating: 0, count: batch * outChannels * ho * wo)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                weight.withFloats { w in
                    for b in 0..<batch {
                        Kernels.conv2d(
                            input: xp.baseAddress! + b * inChannels * height * width, channels: inChannels,
                            height: height, width: width, weight: w, outChannels: outChannels,
                            kernel: kernel, stride: stride, padding: padding, bias: bias?.p,
                            output: yp.baseAddress! + b * outChannels * ho * wo)
                    }
                }
            }
        }
        return (y, ho, wo)
    }
}

/// diffusers `RMSNorm` over the last dimension; the gain is absent when `elementwise_affine` is false.
struct RMSNorm: Sendable {
    let weight: Param?
    let dim: Int
    let eps: Float

    init(_ scope: ParameterScope, dim: Int, eps: Float, affine: Bool) throws(ModelError) {
        self.weight = try scope.param("weight", [dim], if: affine)
        self.dim = dim
        self.eps = eps
    }

    func callAsFunction(_ x: inout [Float]) {
        let rows = x.count / dim
        x.withUnsafeMutableBufferPointer {
            Kernels.rmsNorm($0.baseAddress!, rows: rows, dim: dim, eps: eps, weight: weight?.p)
        }
    }
}

/// `nn.LayerNorm` over the last dimension, with optional weight and bias.
struct LayerNorm: Sendable {
    let weight: Param?
    let bias: Param?
    let dim: Int
    let eps: Float

    init(_ scope: ParameterScope, dim: Int, eps: Float, affine: Bool = true, bias: Bool = true) throws(ModelError) {
        self.weight = try scope.param("weight", [dim], if: affine)
        self.bias = try scope.param("bias", [dim], if: affine && bias)
        self.dim = dim
        self.eps = eps
    }

    func callAsFunction(_ x: inout [Float]) {
        let rows = x.count / dim
        x.withUnsafeMutableBufferPointer {
            Kernels.layerNorm($0.baseAddress!, rows: rows, dim: dim, eps: eps, weight: weight?.p, bias: bias?.p)
        }
    }
}

/// `nn.GroupNorm` (affine) over NCHW images, optionally followed by SiLU.
struct GroupNorm: Sendable {
    let weight: Param
    let bias: Param
    let channels: Int
    let groups: Int
    let eps: Float

    init(_ scope: ParameterScope, channels: Int, groups: Int, eps: Float) throws(ModelError) {
        guard groups > 0, channels % groups == 0 else {
            throw .invalidConfig("\(channels) channels cannot be split into \(groups) groups (\(scope.prefix))")
        }
        self.weight = try scope.param("weight", [channels])
        self.bias = try scope.param("bias", [channels])
        self.channels = channels
        self.groups = groups
        self.eps = eps
    }

    func callAsFunction(_ x: inout [Float], batch: Int, spatial: Int, silu: Bool = false) {
        x.withUnsafeMutableBufferPointer { xp in
            for b in 0..<batch {
                Kernels.groupNorm(
                    xp.baseAddress! + b * channels * spatial, channels: channels, spatial: spatial,
                    groups: groups, eps: eps, weight: weight.p, bias: bias.p, silu: silu)
            }
        }
    }
}

/// diffusers `Attention` with the default processor: to_q/to_k/to_v, scaled dot-product attention without a mask
/// (unless `causal`), to_out.0. K and V come from `context` (cross-attention) or from the queries' input.
struct MultiHeadAttention: Sendable {
    let toQ: Linear
    let toK: Linear
    let toV: Linear
    let toOut: Linear
    let heads: Int
    let headDim: Int

    init(
        _ scope: ParameterScope, queryDim: Int, contextDim: Int, heads: Int, headDim: Int, bias: Bool,
        outBias: Bool
    ) throws(ModelError) {
        let inner = heads * headDim
        self.init(
            toQ: try Linear(scope.child("to_q"), in: queryDim, out: inner, bias: bias),
            toK: try Linear(scope.child("to_k"), in: contextDim, out: inner, bias: bias),
            toV: try Linear(scope.child("to_v"), in: contextDim, out: inner, bias: bias),
            toOut: try Linear(scope.child("to_out").child("0"), in: inner, out: queryDim, bias: outBias),
            heads: heads, headDim: headDim)
    }

    init(toQ: Linear, toK: Linear, toV: Linear, toOut: Linear, heads: Int, headDim: Int) {
        self.toQ = toQ
        self.toK = toK
        self.toV = toV
        self.toOut = toOut
        self.heads = heads
        self.headDim = headDim
    }

    /// Projects `context` to keys and values once (they do not change across sampling steps).
    func keysAndValues(_ context: [Float], rows: Int) -> (k: [Float], v: [Float]) {
        (toK(context, rows: rows), toV(context, rows: rows))
    }

    /// Attention of `x` ([batch·queries, queryDim]) over precomputed keys/values ([batch·keys, inner]).
    func callAsFunction(
        _ x: [Float], batch: Int, queries: Int, k: [Float], v: [Float], keys: Int,
        causal: Bool = false
    ) -> [Float] {
        let inner = heads * headDim
        let q = toQ(x, rows: batch * queries)
        var attended = [Float](repeating: 0, count: batch * queries * inner)
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    attended.withUnsafeMutableBufferPointer { op in
                        Kernels.attention(
                            q: qp.baseAddress!, qStride: inner, k: kp.baseAddress!, kStride: inner,
                            v: vp.baseAddress!, vStride: inner, batch: batch, queries: queries,
                            keys: keys, heads: heads, headDim: headDim, causal: causal,
                            output: op.baseAddress!, outStride: inner)
                    }
                }
            }
        }
        return toOut(attended, rows: batch * queries)
    }

    /// Self-attention (keys and values from `x` itself).
    func callAsFunction(selfAttention x: [Float], batch: Int, tokens: Int, causal: Bool = false) -> [Float] {
        let (k, v) = keysAndValues(x, rows: batch * tokens)
        return self(x, batch: batch, queries: tokens, k: k, v: v, keys: tokens, causal: causal)
    }
}

/// Element-wise helpers on arrays.
enum Ops {
    static func add(_ a: inout [Float], _ b: [Float]) {
        a.withUnsafeMutableBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                Kernels.add(ap.baseAddress!, bp.baseAddress!, count: ap.count)
            }
        }
    }

    static func silu(_ x: [Float]) -> [Float] {
        var y = x
        y.withUnsafeMutableBufferPointer { Kernels.silu($0.baseAddress!, count: $0.count) }
        return y
    }

    /// NCHW → NHWC for `batch` images.
    static func toNHWC(_ x: [Float], batch: Int, channels: Int, spatial: Int) -> [Float] {
        transposed(x, batch: batch, rows: channels, columns: spatial)
    }

    /// NHWC → NCHW for `batch` images.
    static func toNCHW(_ x: [Float], batch: Int, channels: Int, spatial: Int) -> [Float] {
        transposed(x, batch: batch, rows: spatial, columns: channels)
    }

    /// Each of `batch` [rows, columns] matrices in `x`, transposed.
    static func transposed(_ x: [Float], batch: Int, rows: Int, columns: Int) -> [Float] {
        precondition(x.count == batch * rows * columns)
        guard !x.isEmpty else { return [] }
        return [Float](unsafeUninitializedCapacity: x.count) { y, count in
            x.withUnsafeBufferPointer { xp in
                Kernels.transpose(xp.baseAddress!, rows: rows, columns: columns, batch: batch, into: y.baseAddress!)
            }
            count = x.count
        }
    }
}
