import AmusedCore

// PNG (ISO/IEC 15948) reading and writing for the pipelines' inputs and outputs. Reading validates every chunk's
// length and CRC, caps the image size before allocating, and inflates with a bound; writing compresses with zlib
// (level 6, filter type 0 on every row) and is byte-for-byte deterministic for a given zlib.

/// PNG decoding and encoding.
public enum PNG {
    /// Largest image accepted when reading, in pixels (64 megapixels).
    public static let maxPixels = 1 << 26
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// CRC-32 (ISO 3309) of `bytes`, as PNG chunks carry it.
    public static func crc32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 { CRC32.checksum(bytes) }

    /// Decodes `data` (from `path`, for messages) to 8-bit RGB, or to grayscale when `grayscale` is set (PIL's
    /// `convert("L")` of the RGB image for colour inputs). Alpha is dropped, as PIL's `convert("RGB")` does.
    public static func decode(_ data: [UInt8], path: String = "<png>", grayscale: Bool = false) throws(ImageError)
        -> Image8
    {
        guard data.count >= 8, Array(data[0..<8]) == signature else {
            throw ImageError(path: path, offset: 0, "not a PNG file")
        }
        var pos = 8
        var width = 0, height = 0, depth = 0, colorType = 0, interlace = 0
        var palette: [UInt8] = []
        var idat: [UInt8] = []
        var sawIHDR = false, sawIEND = false
        func be32(_ at: Int) -> Int {
            Int(data[at]) << 24 | Int(data[at + 1]) << 16 | Int(data[at + 2]) << 8 | Int(data[at + 3])
        }
        while pos < data.count && !sawIEND {
            guard pos + 12 <= data.count else { throw ImageError(path: path, offset: pos, "truncated chunk header") }
            let length = be32(pos)
            guard length >= 0, length <= data.count - pos - 12 else {
                throw ImageError(path: path, offset: pos, "chunk length \(length) runs past the end of the file")
            }
            let type = String(decoding: data[(pos + 4)..<(pos + 8)], as: UTF8.self)
            let body = data[(pos + 8)..<(pos + 8 + length)]
            let crc = UInt32(truncatingIfNeeded: be32(pos + 8 + length))
            guard crc32(data[(pos + 4)..<(pos + 8 + length)]) == crc else {
                throw ImageError(path: path, offset: pos, "CRC mismatch in \(type) chunk")
            }
            switch type {
            case "IHDR":
                guard length == 13, !sawIHDR else { throw ImageError(path: path, offset: pos, "bad IHDR") }
                sawIHDR = true
                let b = Array(body)
                width = Int(b[0]) << 24 | Int(b[1]) << 16 | Int(b[2]) << 8 | Int(b[3])
                height = Int(b[4]) << 24 | Int(b[5]) << 16 | Int(b[6]) << 8 | Int(b[7])
                depth = Int(b[8])
                colorType = Int(b[9])
                interlace = Int(b[12])
                guard width > 0, height > 0, width <= maxPixels / height else {
                    throw ImageError(
                        path: path, offset: pos, "image size \(width)×\(height) is outside 1…\(maxPixels) pixels")
                }
                guard [0, 2, 3, 4, 6].contains(colorType), b[10] == 0, b[11] == 0, interlace <= 1 else {
                    throw ImageError(path: path, offset: pos, "unsupported colour type, compression or filter method")
                }
                let allowed: [Int: [Int]] = [
                    0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16],
                ]
                guard allowed[colorType]!.contains(depth) else {
                    throw ImageError(
                        path: path, offset: pos, "bit depth \(depth) is invalid for colour type \(colorType)")
                }
                guard interlace == 0 else {
                    throw ImageError(path: path, offset: pos, "interlaced PNGs are not supported")
                }
            case "PLTE":
                palette = Array(body)
            case "IDAT":
                guard sawIHDR else { throw ImageError(path: path, offset: pos, "IDAT before IHDR") }
                idat.append(contentsOf: body)
            case "IEND":
                sawIEND = true
            default:
                // Ancillary chunks are skipped; an unknown critical chunk (upper-case first letter) is refused.
                if let first = type.unicodeScalars.first, first.value < 0x61 {
                    throw ImageError(path: path, offset: pos, "unknown critical chunk \(type)")
                }
            }
            pos += 12 + length
        }
        guard sawIHDR, sawIEND else { throw ImageError(path: path, "missing IHDR or IEND") }
        let samples = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][colorType]!
        let bitsPerPixel = samples * depth
        let stride = (width * bitsPerPixel + 7) / 8
        let bpp = max(1, bitsPerPixel / 8)
        let raw: [UInt8]
        do { raw = try Inflate.zlib(idat, limit: (stride + 1) * height) } catch {
            throw ImageError(path: path, "corrupt image data: \(error)")
        }
        guard raw.count == (stride + 1) * height else {
            throw ImageError(path: path, "image data is \(raw.count) bytes, expected \((stride + 1) * height)")
        }
        // Undo the per-row filters.
        var rows = [UInt8](repeating: 0, count: stride * height)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            let src = y * (stride + 1) + 1, dst = y * stride
            for x in 0..<stride {
                let a = x >= bpp ? Int(rows[dst + x - bpp]) : 0
                let b = y > 0 ? Int(rows[dst - stride + x]) : 0
                let c = (x >= bpp && y > 0) ? Int(rows[dst - stride + x - bpp]) : 0
                let v = Int(raw[src + x])
                var out: Int
                switch filter {
                case 0: out = v
                case 1: out = v + a
                case 2: out = v + b
                case 3: out = v + (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    out = v + ((pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c))
                default: throw ImageError(path: path, "invalid filter type \(filter) in row \(y)")
                }
                rows[dst + x] = UInt8(truncatingIfNeeded: out)
            }
        }
        // To 8-bit RGB.
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        func sample(_ y: Int, _ index: Int) -> Int {
            // The index-th sample of row y, scaled to 8 bits (16-bit: the high byte, as PIL's RGB conversion).
            if depth == 16 { return Int(rows[y * stride + 2 * index]) }
            if depth == 8 { return Int(rows[y * stride + index]) }
            let perByte = 8 / depth
            let byte = Int(rows[y * stride + index / perByte])
            let shift = 8 - depth * (index % perByte + 1)
            return (byte >> shift) & ((1 << depth) - 1)
        }
        for y in 0..<height {
            for x in 0..<width {
                var r = 0, g = 0, b = 0
                switch colorType {
                case 0, 4:
                    var v = sample(y, x * samples)
                    if depth < 8 { v = v * 255 / ((1 << depth) - 1) }
                    (r, g, b) = (v, v, v)
                case 2, 6:
                    (r, g, b) = (sample(y, x * samples), sample(y, x * samples + 1), sample(y, x * samples + 2))
                default:
                    let i = sample(y, x)
                    guard 3 * i + 2 < palette.count else {
                        throw ImageError(path: path, "palette index \(i) out of range")
                    }
                    (r, g, b) = (Int(palette[3 * i]), Int(palette[3 * i + 1]), Int(palette[3 * i + 2]))
                }
                let o = (y * width + x) * 3
                rgb[o] = UInt8(r)
                rgb[o + 1] = UInt8(g)
                rgb[o + 2] = UInt8(b)
            }
        }
        let image = Image8(width: width, height: height, channels: 3, pixels: rgb)
        return grayscale ? image.grayscale() : image
    }

    /// Encodes an 8-bit grayscale or RGB image (no row filters, zlib level 6): deterministic bytes for a given zlib.
    public static func encode(_ image: Image8) throws(ImageError) -> [UInt8] {
        var out = signature
        func chunk(_ type: String, _ body: [UInt8]) {
            var length = UInt32(body.count).bigEndian
            withUnsafeBytes(of: &length) { out += $0 }
            let typed = Array(type.utf8) + body
            out += typed
            var crc = crc32(typed).bigEndian
            withUnsafeBytes(of: &crc) { out += $0 }
        }
        var ihdr: [UInt8] = []
        for v in [UInt32(image.width), UInt32(image.height)] { withUnsafeBytes(of: v.bigEndian) { ihdr += $0 } }
        ihdr += [8, image.channels == 1 ? 0 : 2, 0, 0, 0]
        chunk("IHDR", ihdr)
        let stride = image.width * image.channels
        var raw = [UInt8]()
        raw.reserveCapacity((stride + 1) * image.height)
        for y in 0..<image.height {
            raw.append(0)
            raw += image.pixels[(y * stride)..<((y + 1) * stride)]
        }
        let z: [UInt8]
        do { z = try Deflate.zlib(raw) } catch { throw ImageError(path: "<png>", "\(error)") }
        chunk("IDAT", z)
        chunk("IEND", [])
        return out
    }
}
