// 8-bit images for the pipelines: PNG in and out, grayscale conversion and Lanczos resampling as Pillow does them
// (the reference pipelines preprocess with PIL), so that resized inputs give the same pixels as diffusers.

import AmusedCore
import Foundation

/// Errors reading or writing an image.
public struct ImageError: Error, DescribedError, Equatable, CustomStringConvertible {
    /// The file or source concerned.
    public let path: String
    /// What is wrong.
    public let message: String
    /// Byte offset, where one applies.
    public let offset: Int?

    /// Creates an error.
    public init(path: String, offset: Int? = nil, _ message: String) {
        self.path = path
        self.offset = offset
        self.message = message
    }

    /// What to do.
    public var advice: String {
        "Use a PNG (8 or 16 bits; grayscale, RGB or palette, with or without alpha) or a JPEG."
    }

    /// The same as `errorDescription`.
    public var description: String { errorDescription ?? message }
}

/// An 8-bit image, row-major, interleaved channels (1 = grayscale "L", 3 = RGB).
public struct Image8: Sendable, Equatable {
    /// Width in pixels.
    public let width: Int
    /// Height in pixels.
    public let height: Int
    /// 1 or 3.
    public let channels: Int
    /// height × width × channels bytes.
    public var pixels: [UInt8]

    /// An image over `pixels`.
    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixel count does not match the size")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// PIL's `convert("L")`: L = (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
    public func grayscale() -> Image8 {
        guard channels == 3 else { return self }
        var out = [UInt8](repeating: 0, count: width * height)
        for i in 0..<(width * height) {
            let r = Int(pixels[3 * i]), g = Int(pixels[3 * i + 1]), b = Int(pixels[3 * i + 2])
            out[i] = UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
        }
        return Image8(width: width, height: height, channels: 1, pixels: out)
    }

    /// PIL's `resize((width, height), Image.LANCZOS)` for 8-bit images: separable Lanczos-3 with the filter widened
    /// by the scale when shrinking, coefficients normalised and applied in 22-bit fixed point with rounding,
    /// horizontal pass first.
    public func resized(width newWidth: Int, height newHeight: Int) -> Image8 {
        if newWidth == width && newHeight == height { return self }
        var image = self
        if newWidth != width { image = image.resampleHorizontal(newWidth) }
        if newHeight != height { image = image.transposed().resampleHorizontal(newHeight).transposed() }
        return image
    }

    func transposed() -> Image8 {
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<channels { out[(x * height + y) * channels + c] = pixels[(y * width + x) * channels + c] }
            }
        }
        return Image8(width: height, height: width, channels: channels, pixels: out)
    }

    static func lanczos(_ x: Double) -> Double {
        func sinc(_ v: Double) -> Double {
            if v == 0 { return 1 }
            let p = v * Double.pi
            return sin(p) / p
        }
        return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0
    }

    func resampleHorizontal(_ outSize: Int) -> Image8 {
        let precisionBits = 32 - 8 - 2
        let scale = Double(width) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = 3.0 * filterScale
        var out = [UInt8](repeating: 0, count: outSize * height * channels)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1 / filterScale
            var xmin = Int(center - support + 0.5)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > width { xmax = width }
            xmax -= xmin
            var weights = [Double](repeating: 0, count: xmax)
            var total = 0.0
            for x in 0..<xmax {
                let w = Self.lanczos((Double(x + xmin) - center + 0.5) * ss)
                weights[x] = w
                total += w
            }
            // Normalise, then to fixed point rounding half away from zero, as Pillow's normalize_coeffs_8bpc.
            let fixed = weights.map { w -> Int in
                let v = total != 0 ? w / total : 0
                return Int(
                    v < 0 ? trunc(-0.5 + v * Double(1 << precisionBits)) : trunc(0.5 + v * Double(1 << precisionBits)))
            }
            for y in 0..<height {
                for c in 0..<channels {
                    var acc = 1 << (precisionBits - 1)
                    for x in 0..<xmax { acc += Int(pixels[(y * width + x + xmin) * channels + c]) * fixed[x] }
                    let v = acc >> precisionBits
                    out[(y * outSize + xx) * channels + c] = UInt8(max(0, min(255, v)))
                }
            }
        }
        return Image8(width: outSize, height: height, channels: channels, pixels: out)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin

#endif
