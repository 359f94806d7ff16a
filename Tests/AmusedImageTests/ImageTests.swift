// PNG decoding and Pillow-compatible resampling against what PIL produced (Fixtures/images, Tools/make_fixtures.py).

import AmusedCore
import AmusedImage
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("images")
struct ImageTests {
    static let expected = try? SafetensorsFile(path: FixturePaths.path("images/expected.safetensors"))

    func pixels(_ name: String) throws -> (values: [UInt8], shape: [Int]) {
        let t = try #require(Self.expected).tensor(named: name)
        return (try t.int64s().map { UInt8($0) }, t.shape)
    }

    func png(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: FixturePaths.path("images/\(name).png"))))
    }

    /// Every 8-bit colour type PIL writes decodes to exactly PIL's `convert("RGB")` pixels.
    @Test(arguments: ["rgb", "rgba", "gray", "palette"])
    func decodesLikePIL(_ name: String) throws {
        let image = try PNG.decode(try png(name), path: name)
        let (expected, shape) = try pixels("\(name)/rgb")
        #expect([image.height, image.width, image.channels] == shape)
        let mismatches = zip(image.pixels, expected).filter { $0 != $1 }.count
        #expect(mismatches == 0 && image.pixels.count == expected.count)
    }

    /// JPEGs decode to exactly the pixels Pillow gives (both use libjpeg-turbo's default islow IDCT and fancy
    /// upsampling): 4:2:0 and 4:4:4 colour, and grayscale.
    @Test(arguments: [("photo420", "photo420"), ("photo444", "photo444"), ("gray", "grayjpg")])
    func jpegDecodesLikePIL(file: String, key: String) throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: FixturePaths.path("images/\(file).jpg"))))
        let image = try decodeImage(data, path: file)
        let (expected, shape) = try pixels("\(key)/rgb")
        #expect([image.height, image.width, image.channels] == shape)
        let mismatches = zip(image.pixels, expected).filter { $0 != $1 }.count
        #expect(mismatches == 0 && image.pixels.count == expected.count, "\(mismatches) differing samples")
    }

    @Test func damagedJPEGIsAnErrorNotACrash() throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: FixturePaths.path("images/photo420.jpg"))))
        let error = try #require(throws: ImageError.self) { try JPEG.decode(Array(data.prefix(300)), path: "cut.jpg") }
        #expect(error.path == "cut.jpg")
        #expect(throws: ImageError.self) { try decodeImage([1, 2, 3, 4], path: "x") }
        // Cut inside the scan data: libjpeg would fill the rest with gray; Pillow refuses ("image file is truncated").
        let truncated = try #require(throws: ImageError.self) {
            try JPEG.decode(Array(data.prefix(data.count * 4 / 5)), path: "cut.jpg")
        }
        #expect(truncated.message.contains("Premature end of JPEG file"))
    }

    /// 16-bit samples keep their high byte, as PIL does for 16-bit RGB. (PIL clips 16-bit grayscale to 255 instead,
    /// which turns almost every pixel white; that difference is deliberate.) gray16.png holds G·257 + 3.
    @Test func sixteenBitKeepsTheHighByte() throws {
        let image = try PNG.decode(try png("gray16"))
        let green = try PNG.decode(try png("rgb")).pixels.enumerated().filter { $0.offset % 3 == 1 }.map(\.element)
        let ours = image.pixels.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        #expect(ours == green)
    }

    /// Lanczos resizes are bit-exact with PIL's (fixed-point arithmetic reproduced), up and down, RGB and L.
    @Test(arguments: [(16, 32), (29, 16), (64, 80), (8, 8), (29, 37)])
    func lanczosMatchesPIL(width: Int, height: Int) throws {
        let rgb = try PNG.decode(try png("rgb"))
        let expectedRGB = try pixels("lanczos/rgb_\(width)x\(height)").values
        let oursRGB = rgb.resized(width: width, height: height).pixels
        #expect(oursRGB.count == expectedRGB.count && zip(oursRGB, expectedRGB).allSatisfy { $0 == $1 })
        let gray = try PNG.decode(try png("gray"), grayscale: true)
        let expectedGray = try pixels("lanczos/gray_\(width)x\(height)").values
        let oursGray = gray.resized(width: width, height: height).pixels
        #expect(oursGray.count == expectedGray.count && zip(oursGray, expectedGray).allSatisfy { $0 == $1 })
    }

    @Test func grayscaleConversionMatchesPIL() throws {
        let ours = try PNG.decode(try png("rgb"), grayscale: true).pixels
        #expect(ours.elementsEqual(try pixels("convert_l/from_rgb").values))
    }

    /// What we write, we read back identically (PIL reads it too: see the generate test).
    @Test func encodeRoundTrips() throws {
        let image = try PNG.decode(try png("rgb"))
        #expect(try PNG.decode(try PNG.encode(image)) == image)
        #expect(try PNG.encode(image) == PNG.encode(image))
    }

    /// Damaged files fail with a message, never a crash or a huge allocation.
    @Test func hostilePNGsAreRefused() throws {
        var bytes = try png("rgb")
        #expect(throws: ImageError.self) { try PNG.decode(Array(bytes.prefix(40))) }
        bytes[40] ^= 0xFF  // inside a chunk: CRC mismatch
        #expect(throws: ImageError.self) { try PNG.decode(bytes) }
        // IHDR claiming 100000 × 100000 pixels: refused before anything is allocated.
        var huge = try png("rgb")
        for (i, b) in [UInt8(0x00), 0x01, 0x86, 0xA0, 0x00, 0x01, 0x86, 0xA0].enumerated() { huge[16 + i] = b }
        let crc = PNG.crc32(huge[12..<29])
        for i in 0..<4 { huge[29 + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * UInt32(i))) }
        let error = try #require(throws: ImageError.self) { try PNG.decode(huge) }
        #expect(error.message.contains("size"))
        #expect(throws: ImageError.self) { try PNG.decode([0x89, 0x50, 0x4E, 0x47]) }
    }
}

@Suite("inflate")
struct InflateTests {
    /// A deflate bomb is stopped at the stated limit.
    @Test func expansionIsBounded() throws {
        let png = [UInt8](try Data(contentsOf: URL(fileURLWithPath: FixturePaths.path("images/rgb.png"))))
        // The IDAT of rgb.png starts after the signature (8), IHDR (25) and the IDAT header (8).
        let length = Int(png[33]) << 24 | Int(png[34]) << 16 | Int(png[35]) << 8 | Int(png[36])
        let idat = Array(png[41..<(41 + length)])
        let full = try Inflate.zlib(idat, limit: 1 << 20)
        #expect(full.count == (29 * 3 + 1) * 37)
        #expect(throws: ZlibError.self) { try Inflate.zlib(idat, limit: 100) }
    }
}
