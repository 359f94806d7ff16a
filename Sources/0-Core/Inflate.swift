// DEFLATE decoding (RFC 1951) and the zlib wrapper (RFC 1950), bounded: the caller states the most bytes it will
// accept, and a stream that would expand past that is refused before the memory is used. Follows the structure of
// zlib's reference decoder puff.c (canonical Huffman tables decoded by counts).
import Foundation

/// Errors decoding a compressed stream.
public struct InflateError: Error, LocalizedError, Equatable, Sendable, CustomStringConvertible {
    /// The same as `description` (what the command line prints).
    public var errorDescription: String? { description }

    /// What is wrong.
    public let message: String
    /// Byte offset in the compressed input where it was found.
    public let offset: Int
    /// True when the data was fine but would expand past the limit.
    public var pastLimit = false
    /// `message (at byte N of the compressed stream)`.
    public var description: String { "\(message) (at byte \(offset) of the compressed stream)" }
}

/// A bounded DEFLATE decoder.
public enum Inflate {
    /// Decodes a zlib stream (2-byte header, DEFLATE data, Adler-32), producing at most `limit` bytes.
    public static func zlib(_ input: [UInt8], limit: Int) throws(InflateError) -> [UInt8] {
        guard input.count >= 6 else { throw InflateError(message: "zlib stream too short", offset: 0) }
        let cmf = input[0], flg = input[1]
        guard cmf & 0x0F == 8, (UInt16(cmf) << 8 | UInt16(flg)) % 31 == 0, flg & 0x20 == 0 else {
            throw InflateError(message: "not a zlib stream with deflate and no preset dictionary", offset: 0)
        }
        var decoder = Decoder(input: input, position: 2, limit: limit)
        let out = try decoder.run()
        let end = decoder.bytePosition  // the Adler-32 starts at the byte after the last one read
        guard end + 4 <= input.count else { throw InflateError(message: "missing Adler-32", offset: end) }
        let expected = input[end..<(end + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard adler32(out) == expected else { throw InflateError(message: "Adler-32 mismatch", offset: end) }
        return out
    }

    /// Decodes raw DEFLATE data, producing at most `limit` bytes; returns the output and the bytes consumed.
    public static func raw(_ input: [UInt8], limit: Int) throws(InflateError) -> (output: [UInt8], consumed: Int) {
        var decoder = Decoder(input: input, position: 0, limit: limit)
        let out = try decoder.run()
        return (out, decoder.bytePosition)
    }

    /// The first bytes of raw DEFLATE data, up to `count` of them (fewer when the stream is shorter), without
    /// decoding the rest: enough to read a header inside a compressed member without inflating all of it.
    public static func prefix(_ input: [UInt8], count: Int) throws(InflateError) -> [UInt8] {
        var decoder = Decoder(input: input, position: 0, limit: count, truncating: true)
        do {
            return try decoder.run()
        } catch where error.pastLimit {
            return decoder.out  // exactly `count` bytes: the block that crossed the limit was cut there
        }
    }

    /// Adler-32 of `data`.
    public static func adler32(_ data: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        var i = 0
        while i < data.count {
            let end = min(data.count, i + 5552)
            while i < end {
                a += UInt32(data[i])
                b += a
                i += 1
            }
            a %= 65521
            b %= 65521
        }
        return b << 16 | a
    }

    struct Huffman {
        var counts = [Int](repeating: 0, count: 16)
        var symbols: [Int]

        init(lengths: ArraySlice<Int>) throws(InflateError) {
            symbols = [Int](repeating: 0, count: lengths.count)
            for l in lengths { counts[l] += 1 }
            var left = 1
            for len in 1..<16 {
                left <<= 1
                left -= counts[len]
                if left < 0 { throw InflateError(message: "over-subscribed Huffman code", offset: 0) }
            }
            var offs = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offs[len + 1] = offs[len] + counts[len] }
            for (symbol, l) in lengths.enumerated() where l != 0 {
                symbols[offs[l]] = symbol
                offs[l] += 1
            }
        }
    }

    struct Decoder {
        let input: [UInt8]
        var bytePosition: Int
        var bitBuffer = 0
        var bitCount = 0
        let limit: Int
        var out: [UInt8] = []
        var position: Int { bytePosition * 8 - bitCount }

        /// Whether a block that would cross the limit is cut at it (for `prefix`) rather than refused.
        let truncating: Bool

        init(input: [UInt8], position: Int, limit: Int, truncating: Bool = false) {
            self.input = input
            self.bytePosition = position
            self.limit = limit
            self.truncating = truncating
        }

        mutating func bits(_ n: Int) throws(InflateError) -> Int {
            var value = bitBuffer
            while bitCount < n {
                guard bytePosition < input.count else {
                    throw InflateError(message: "compressed data ends early", offset: bytePosition)
                }
                value |= Int(input[bytePosition]) << bitCount
                bytePosition += 1
                bitCount += 8
            }
            bitBuffer = value >> n
            bitCount -= n
            return value & ((1 << n) - 1)
        }

        mutating func decode(_ h: Huffman) throws(InflateError) -> Int {
            var code = 0, first = 0, index = 0
            for len in 1..<16 {
                code |= try bits(1)
                let count = h.counts[len]
                if code - count < first { return h.symbols[index + (code - first)] }
                index += count
                first += count
                first <<= 1
                code <<= 1
            }
            throw InflateError(message: "invalid Huffman code", offset: bytePosition)
        }

        func pastLimit() -> InflateError {
            InflateError(message: "data expands past the \(limit)-byte limit", offset: bytePosition, pastLimit: true)
        }

        mutating func emit(_ byte: UInt8) throws(InflateError) {
            guard out.count < limit else {
                throw pastLimit()
            }
            out.append(byte)
        }

        static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
                                 115, 131, 163, 195, 227, 258]
        static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
        static let distBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                               2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
        static let distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
                                13, 13]

        mutating func codes(_ lit: Huffman, _ dist: Huffman) throws(InflateError) {
            while true {
                let symbol = try decode(lit)
                if symbol < 256 {
                    try emit(UInt8(symbol))
                } else if symbol == 256 {
                    return
                } else {
                    let s = symbol - 257
                    guard s < 29 else { throw InflateError(message: "invalid length symbol", offset: bytePosition) }
                    let length = Self.lengthBase[s] + (try bits(Self.lengthExtra[s]))
                    let ds = try decode(dist)
                    guard ds < 30 else { throw InflateError(message: "invalid distance symbol", offset: bytePosition) }
                    let distance = Self.distBase[ds] + (try bits(Self.distExtra[ds]))
                    guard distance <= out.count else {
                        throw InflateError(message: "distance \(distance) reaches before the start", offset: bytePosition)
                    }
                    guard out.count + length <= limit else {
                        if truncating { while out.count < limit { out.append(out[out.count - distance]) } }
                        throw pastLimit()
                    }
                    let from = out.count - distance
                    for k in 0..<length { out.append(out[from + k]) }
                }
            }
        }

        mutating func run() throws(InflateError) -> [UInt8] {
            var last = 0
            repeat {
                last = try bits(1)
                switch try bits(2) {
                case 0:
                    bitBuffer = 0
                    bitCount = 0
                    guard bytePosition + 4 <= input.count else {
                        throw InflateError(message: "stored block header truncated", offset: bytePosition)
                    }
                    let len = Int(input[bytePosition]) | Int(input[bytePosition + 1]) << 8
                    let nlen = Int(input[bytePosition + 2]) | Int(input[bytePosition + 3]) << 8
                    guard len == (~nlen & 0xFFFF) else {
                        throw InflateError(message: "stored block length check fails", offset: bytePosition)
                    }
                    bytePosition += 4
                    guard bytePosition + len <= input.count else {
                        throw InflateError(message: "stored block truncated", offset: bytePosition)
                    }
                    guard out.count + len <= limit else {
                        if truncating { out.append(contentsOf: input[bytePosition..<(bytePosition + limit - out.count)]) }
                        throw pastLimit()
                    }
                    out.append(contentsOf: input[bytePosition..<(bytePosition + len)])
                    bytePosition += len
                case 1:
                    var lengths = [Int](repeating: 8, count: 288)
                    for i in 144..<256 { lengths[i] = 9 }
                    for i in 256..<280 { lengths[i] = 7 }
                    try codes(try Huffman(lengths: lengths[0...]), try Huffman(lengths: [Int](repeating: 5, count: 30)[0...]))
                case 2:
                    let nlen = try bits(5) + 257, ndist = try bits(5) + 1, ncode = try bits(4) + 4
                    guard nlen <= 286, ndist <= 30 else {
                        throw InflateError(message: "bad dynamic block counts", offset: bytePosition)
                    }
                    let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
                    var lengths = [Int](repeating: 0, count: 320)
                    for i in 0..<ncode { lengths[order[i]] = try bits(3) }
                    let lencode = try Huffman(lengths: lengths[0..<19])
                    var index = 0
                    while index < nlen + ndist {
                        var symbol = try decode(lencode)
                        if symbol < 16 {
                            lengths[index] = symbol
                            index += 1
                        } else {
                            var value = 0
                            if symbol == 16 {
                                guard index > 0 else { throw InflateError(message: "repeat with no previous length", offset: bytePosition) }
                                value = lengths[index - 1]
                                symbol = 3 + (try bits(2))
                            } else if symbol == 17 {
                                symbol = 3 + (try bits(3))
                            } else {
                                symbol = 11 + (try bits(7))
                            }
                            guard index + symbol <= nlen + ndist else {
                                throw InflateError(message: "too many code lengths", offset: bytePosition)
                            }
                            for _ in 0..<symbol {
                                lengths[index] = value
                                index += 1
                            }
                        }
                    }
                    guard lengths[256] != 0 else { throw InflateError(message: "no end-of-block code", offset: bytePosition) }
                    try codes(try Huffman(lengths: lengths[0..<nlen]), try Huffman(lengths: lengths[nlen..<(nlen + ndist)]))
                default:
                    throw InflateError(message: "invalid block type", offset: bytePosition)
                }
            } while last == 0
            return out
        }
    }
}
