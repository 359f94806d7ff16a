// JPEG reading through libjpeg-turbo with its default decoding (islow IDCT, fancy upsampling): the same decoder and
// settings Pillow uses, so the pixels match what diffusers sees.

import CJPEG

/// JPEG decoding.
public enum JPEG {
    /// Decodes `data` (from `path`, for messages) to 8-bit RGB, or grayscale (PIL's `convert("L")`) when asked.
    public static func decode(_ data: [UInt8], path: String = "<jpeg>", grayscale: Bool = false) throws(ImageError)
        -> Image8
    {
        guard data.count >= 4, data[0] == 0xFF, data[1] == 0xD8 else {
            throw ImageError(path: path, offset: 0, "not a JPEG file")
        }
        var width: Int32 = 0, height: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let pixels = data.withUnsafeBufferPointer { buffer in
            amused_jpeg_decode(
                buffer.baseAddress, buffer.count, PNG.maxPixels, &width, &height, &message, message.count)
        }
        guard let pixels else {
            throw ImageError(
                path: path,
                "cannot decode: \(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))"
            )
        }
        defer { amused_jpeg_free(pixels) }
        let count = Int(width) * Int(height) * 3
        let image = Image8(
            width: Int(width), height: Int(height), channels: 3,
            pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
        return grayscale ? image.grayscale() : image
    }
}

/// Reads a PNG or JPEG, chosen by its first bytes.
public func decodeImage(_ data: [UInt8], path: String, grayscale: Bool = false) throws(ImageError) -> Image8 {
    if data.starts(with: PNG.signature) { return try PNG.decode(data, path: path, grayscale: grayscale) }
    if data.starts(with: [0xFF, 0xD8]) { return try JPEG.decode(data, path: path, grayscale: grayscale) }
    throw ImageError(path: path, offset: 0, "not a PNG or JPEG file")
}
