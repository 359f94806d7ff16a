// CRC-32 as zip and PNG define it (ISO 3309, reflected polynomial 0xEDB88320), against published check values.

import AmusedCore
import Testing

@Suite("CRC-32")
struct ChecksumTests {
    /// The catalogue check value of CRC-32/ISO-HDLC ("123456789" → 0xCBF43926), the empty input's 0, and zlib's
    /// crc32("The quick brown fox jumps over the lazy dog") = 0x414FA339; a checksum continued over two pieces equals
    /// the one over the whole, as the zip reader computes it chunk by chunk.
    @Test func publishedCheckValues() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        let fox = Array("The quick brown fox jumps over the lazy dog".utf8)
        #expect(CRC32.checksum(fox) == 0x414F_A339)
        let head = fox[..<17].withUnsafeBytes { CRC32.checksum($0) }
        #expect(fox[17...].withUnsafeBytes { CRC32.checksum($0, continuing: head) } == 0x414F_A339)
        #expect(CRC32.checksum(Array("123456780".utf8)) != 0xCBF4_3926)
    }
}
