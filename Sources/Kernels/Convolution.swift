#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Convolutions over float32 images: im2col + GEMM in row tiles (NCHW), direct depthwise 3×3 (NHWC), and the
// 2×2 stride-2 convolution and transposed convolution the 512 transformer uses (NHWC, one GEMM each).

extension Kernels {
    /// Whether 3×3 stride-1 convolutions use Winograd F(4×4, 3×3) (default) rather than im2col + GEMM.
    /// `AMUSED_CONV=im2col` in the environment turns it off, for comparisons.
    public static let useWinograd: Bool = getenv("AMUSED_CONV").map { String(cString: $0) != "im2col" } ?? true

    /// Zero padding on each side of an image, as `F.pad(x, (left, right, top, bottom))` / `Conv2d(padding:)` give.
    public struct Padding: Sendable, Equatable {
        /// Rows added above.
        public var top: Int
        /// Columns added on the left.
        public var left: Int
        /// Rows added below.
        public var bottom: Int
        /// Columns added on the right.
        public var right: Int

        /// The same padding on every side.
        public static func same(_ p: Int) -> Padding { Padding(top: p, left: p, bottom: p, right: p) }

        /// Explicit padding per side.
        public init(top: Int, left: Int, bottom: Int, right: Int) {
            self.top = top
            self.left = left
            self.bottom = bottom
            self.right = right
        }
    }

    /// Output size of a convolution along one axis.
    public static func convOutputSize(_ input: Int, kernel: Int, stride: Int, padBefore: Int, padAfter: Int) -> Int {
        (input + padBefore + padAfter - kernel) / stride + 1
    }

    /// 2-D convolution of one NCHW image: `output[cout, ho, wo]` (overwritten) from `input[cin, h, w]` and
    /// `weight[cout, cin, kh, kw]`, plus `bias[cout]`. A 1×1 stride-1 convolution is one GEMM; others go through
    /// im2col tiles of at most ~8 MiB so that large images do not need a column buffer of their full size.
    public static func conv2d(
        input: UnsafePointer<Float>, channels cin: Int, height h: Int, width w: Int,
        weight: UnsafePointer<Float>, outChannels cout: Int, kernel k: Int, stride: Int,
        padding: Padding, bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>
    ) {
        let ho = convOutputSize(h, kernel: k, stride: stride, padBefore: padding.top, padAfter: padding.bottom)
        let wo = convOutputSize(w, kernel: k, stride: stride, padBefore: padding.left, padAfter: padding.right)
        let n = ho * wo
        if k == 3 && stride == 1 && padding == .same(1) && useWinograd && winogradPays(height: h, width: w) {
            conv3x3Winograd(
                input: input, channels: cin, height: h, width: w, weight: weight, outChannels: cout,
                bias: bias, output: output)
            return
        }
        if k == 1 && stride == 1 && padding == .same(0) {
            sgemm(m: cout, n: n, k: cin, a: weight, lda: cin, b: input, ldb: n, transposeB: false, c: output, ldc: n)
        } else {
            let kk = cin * k * k
            let rowsPerTile = max(1, min(ho, (2 << 20) / max(1, kk * wo)))
            let colCount = kk * rowsPerTile * wo
            let col = ScratchPool.shared.borrow(colCount)
            defer { ScratchPool.shared.giveBack(col, colCount) }
            var y0 = 0
            while y0 < ho {
                let rows = min(rowsPerTile, ho - y0)
                let tileN = rows * wo
                let cols = SharedPointer(col)
                Parallel.chunks(kk, cost: tileN) { range in
                    for r in range {
                        let c = r / (k * k), ky = (r / k) % k, kx = r % k
                        let dst = cols.p + r * tileN
                        let plane = input + c * h * w
                        for oy in 0..<rows {
                            let iy = (y0 + oy) * stride - padding.top + ky
                            let out = dst + oy * wo
                            if iy < 0 || iy >= h {
                                out.update(repeating: 0, count: wo)
                                continue
                            }
                            let src = plane + iy * w
                            for ox in 0..<wo {
                                let ix = ox * stride - padding.left + kx
                                out[ox] = (ix >= 0 && ix < w) ? src[ix] : 0
                            }
                        }
                    }
                }
                sgemm(
                    m: cout, n: tileN, k: kk, a: weight, lda: kk, b: col, ldb: tileN, transposeB: false,
                    c: output + y0 * wo, ldc: n)
                y0 += rows
            }
        }
        if let bias {
            let out = SharedPointer(output)
            Parallel.chunks(cout, cost: n) { range in
                for c in range {
                    let b = bias[c], row = out.p + c * n
                    for i in 0..<n { row[i] += b }
                }
            }
        }
    }

    /// Depthwise 3×3 convolution, padding 1, on NHWC tokens: `output[b, y, x, c]` from `input` and
    /// `weight[c, 1, 3, 3]` (+ bias).
    public static func depthwiseConv3x3NHWC(
        input: UnsafePointer<Float>, batch: Int, height h: Int, width w: Int,
        channels c: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        output: UnsafeMutablePointer<Float>
    ) {
        // Transpose the weights to [tap][channel] so the inner loop runs over contiguous channels.
        var taps = [Float](repeating: 0, count: 9 * c)
        for ch in 0..<c { for t in 0..<9 { taps[t * c + ch] = weight[ch * 9 + t] } }
        let out = SharedPointer(output)
        taps.withUnsafeBufferPointer { tapBuffer in
            let tp = tapBuffer.baseAddress!
            Parallel.chunks(batch * h, cost: w * c * 9) { range in
                for row in range {
                    let b = row / h, y = row % h
                    for x in 0..<w {
                        let dst = out.p + ((b * h + y) * w + x) * c
                        if let bias {
                            for ch in 0..<c { dst[ch] = bias[ch] }
                        } else {
                            dst.update(repeating: 0, count: c)
                        }
                        for ky in 0..<3 {
                            let iy = y + ky - 1
                            if iy < 0 || iy >= h { continue }
                            for kx in 0..<3 {
                                let ix = x + kx - 1
                                if ix < 0 || ix >= w { continue }
                                let src = input + ((b * h + iy) * w + ix) * c
                                let wt = tp + (ky * 3 + kx) * c
                                for ch in 0..<c { dst[ch] += src[ch] * wt[ch] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// 2×2 stride-2 convolution on NHWC tokens (even sizes; the right/bottom zero padding diffusers adds is never
    /// read for even sizes): `output[b, h/2, w/2, cout]` from `weight[cout, cin, 2, 2]` (+ bias).
    public static func conv2x2Stride2NHWC(
        input: UnsafePointer<Float>, batch: Int, height h: Int, width w: Int,
        channels cin: Int, weight: UnsafePointer<Float>, outChannels cout: Int,
        bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>
    ) {
        let ho = h / 2, wo = w / 2
        let m = batch * ho * wo, kk = cin * 4
        // patches[m, (cin, ky, kx)] matches the weight's [cout, cin, ky, kx] layout.
        let patches = UnsafeMutablePointer<Float>.allocate(capacity: m * kk)
        defer { patches.deallocate() }
        for b in 0..<batch {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let dst = patches + ((b * ho + oy) * wo + ox) * kk
                    for ky in 0..<2 {
                        for kx in 0..<2 {
                            let src = input + ((b * h + 2 * oy + ky) * w + 2 * ox + kx) * cin
                            for c in 0..<cin { dst[c * 4 + ky * 2 + kx] = src[c] }
                        }
                    }
                }
            }
        }
        sgemm(m: m, n: cout, k: kk, a: patches, lda: kk, b: weight, ldb: kk, transposeB: true, c: output, ldc: cout)
        if let bias { addBias(output, rows: m, dim: cout, bias: bias) }
    }

    /// 2×2 stride-2 transposed convolution on NHWC tokens: `output[b, 2h, 2w, cout]` from
    /// `weight[cin, cout, 2, 2]` (PyTorch's ConvTranspose2d layout) (+ bias). Every output pixel has exactly one
    /// contributing input pixel, so this is one GEMM and a scatter.
    public static func convTranspose2x2Stride2NHWC(
        input: UnsafePointer<Float>, batch: Int, height h: Int,
        width w: Int, channels cin: Int, weight: UnsafePointer<Float>,
        outChannels cout: Int, bias: UnsafePointer<Float>?,
        output: UnsafeMutablePointer<Float>
    ) {
        let m = batch * h * w, n = cout * 4
        let products = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        defer { products.deallocate() }
        // products[pixel, (cout, ky, kx)] = Σ_cin input[pixel, cin] · weight[cin, (cout, ky, kx)]
        sgemm(m: m, n: n, k: cin, a: input, lda: cin, b: weight, ldb: n, transposeB: false, c: products, ldc: n)
        for b in 0..<batch {
            for y in 0..<h {
                for x in 0..<w {
                    let src = products + ((b * h + y) * w + x) * n
                    for ky in 0..<2 {
                        for kx in 0..<2 {
                            let dst = output + ((b * 2 * h + 2 * y + ky) * 2 * w + 2 * x + kx) * cout
                            for c in 0..<cout { dst[c] = src[c * 4 + ky * 2 + kx] + (bias?[c] ?? 0) }
                        }
                    }
                }
            }
        }
    }

    /// Nearest-neighbour ×2 upsampling of one NCHW image.
    public static func upsampleNearest2x(
        input: UnsafePointer<Float>, channels: Int, height h: Int, width w: Int,
        output: UnsafeMutablePointer<Float>
    ) {
        let out = SharedPointer(output)
        Parallel.chunks(channels, cost: h * w * 4) { range in
            for c in range {
                let src = input + c * h * w, dst = out.p + c * 4 * h * w
                for y in 0..<(2 * h) {
                    let s = src + (y / 2) * w, d = dst + y * 2 * w
                    for x in 0..<(2 * w) { d[x] = s[x / 2] }
                }
            }
        }
    }
}
