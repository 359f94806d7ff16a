// DEFLATE (RFC 1951) and the zlib wrapper (RFC 1950) through zlib itself, bounded: the caller states the most bytes
// it will accept, the output grows only as the stream really produces bytes (never from a size claim), and a stream
// that would expand past the limit is refused when it produces the first byte beyond it.

import CZlib
import Foundation

/// Errors decoding or encoding a zlib or raw DEFLATE stream.
public struct ZlibError: Error, LocalizedError, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public let message: String
    /// Byte offset in the compressed input where it was found (as far as zlib had read).
    public let offset: Int
    /// True when the data was fine but would expand past the limit.
    public var pastLimit = false
    /// `message (at byte N of the compressed stream)`.
    public var description: String { "\(message) (at byte \(offset) of the compressed stream)" }
    /// The same as `description` (what the command line prints).
    public var errorDescription: String? { description }
}

/// A bounded DEFLATE decoder.
public enum Inflate {
    /// Decodes a zlib stream (2-byte header, DEFLATE data, Adler-32, which zlib checks), producing at most `limit`
    /// bytes.
    public static func zlib(_ input: [UInt8], limit: Int) throws(ZlibError) -> [UInt8] {
        try run(input, windowBits: 15, limit: limit, truncating: false).output
    }

    /// Decodes raw DEFLATE data, producing at most `limit` bytes; returns the output and the bytes consumed.
    public static func raw(_ input: [UInt8], limit: Int) throws(ZlibError) -> (output: [UInt8], consumed: Int) {
        try run(input, windowBits: -15, limit: limit, truncating: false)
    }

    /// The first bytes of raw DEFLATE data, up to `count` of them (fewer when the stream is shorter), without
    /// decoding the rest: enough to read a header inside a compressed member without inflating all of it.
    public static func prefix(_ input: [UInt8], count: Int) throws(ZlibError) -> [UInt8] {
        try run(input, windowBits: -15, limit: count, truncating: true).output
    }

    /// Adler-32 of `data`.
    public static func adler32(_ data: [UInt8]) -> UInt32 {
        data.withUnsafeBufferPointer { b in
            var a = CZlib.adler32(0, nil, 0)
            var start = 0
            while start < b.count {  // zlib takes lengths as 32-bit integers
                let n = min(b.count - start, 1 << 30)
                a = CZlib.adler32(a, b.baseAddress! + start, uInt(n))
                start += n
            }
            return UInt32(a)
        }
    }

    /// Inflates `input` (zlib-wrapped when `windowBits` is 15, raw when -15) into at most `limit` bytes. With
    /// `truncating`, output stops at the limit; otherwise a stream that goes on past it is an error (`pastLimit`).
    static func run(_ input: [UInt8], windowBits: Int32, limit: Int, truncating: Bool) throws(ZlibError)
        -> (output: [UInt8], consumed: Int)
    {
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw ZlibError(message: "zlib could not start a decoder (out of memory)", offset: 0)
        }
        defer { inflateEnd(&stream) }
        func failure(_ status: Int32) -> ZlibError {
            let reason =
                stream.msg.map { String(cString: $0) }
                ?? (status == Z_BUF_ERROR || status == Z_OK
                    ? "compressed data ends early"
                    : status == Z_NEED_DICT ? "the stream asks for a preset dictionary" : "zlib status \(status)")
            return ZlibError(
                message: windowBits > 0 && status == Z_DATA_ERROR && reason == "incorrect data check"
                    ? "Adler-32 mismatch" : reason, offset: Int(stream.total_in))
        }
        guard limit >= 0 else { throw ZlibError(message: "negative output limit \(limit)", offset: 0) }
        // The output grows by doubling from 64 KiB: memory follows what the stream produces, never the limit (which
        // often comes from a size the file claims).
        var out = [UInt8](repeating: 0, count: min(limit, 1 << 16))
        var produced = 0, fed = 0
        return try input.withUnsafeBufferPointer { inBuffer throws(ZlibError) in
            while true {
                if stream.avail_in == 0 && fed < inBuffer.count {
                    let n = min(inBuffer.count - fed, 1 << 30)
                    stream.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress! + fed)
                    stream.avail_in = uInt(n)
                    fed += n
                }
                if produced == out.count {
                    if out.count < limit {
                        // Exactly `grown` (appending may round the capacity up past the limit), by memcpy and memset:
                        // `append(contentsOf: repeatElement(0, …))` went byte by byte through generic iterators in
                        // unoptimised builds — the test inflating a 268 MB member took 112 s (15 s now).
                        let grown = min(limit, 2 * out.count)
                        out = out.withUnsafeBytes { old in
                            [UInt8](unsafeUninitializedCapacity: grown) { buffer, initialized in
                                memcpy(buffer.baseAddress!, old.baseAddress!, old.count)
                                memset(buffer.baseAddress! + old.count, 0, grown - old.count)
                                initialized = grown
                            }
                        }
                    } else if truncating {
                        break
                    } else {
                        // At the limit: one more byte decides between the end of the stream and a bomb.
                        var probe: UInt8 = 0
                        let status = withUnsafeMutablePointer(to: &probe) { p in
                            stream.next_out = p
                            stream.avail_out = 1
                            return inflate(&stream, Z_NO_FLUSH)
                        }
                        if status == Z_STREAM_END && stream.avail_out == 1 { break }
                        if stream.avail_out == 0 {
                            var e = ZlibError(
                                message: "inflates past the limit of \(limit) bytes",
                                offset: Int(stream.total_in))
                            e.pastLimit = true
                            throw e
                        }
                        let inputLeft = stream.avail_in > 0 || fed < inBuffer.count
                        if (status == Z_OK || status == Z_BUF_ERROR) && inputLeft { continue }
                        throw failure(status == Z_OK ? Z_BUF_ERROR : status)
                    }
                }
                let room = min(out.count - produced, 1 << 30)
                let status = out.withUnsafeMutableBufferPointer { o in
                    stream.next_out = o.baseAddress! + produced
                    stream.avail_out = uInt(room)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                produced += room - Int(stream.avail_out)
                if status == Z_STREAM_END { break }
                guard status == Z_OK || status == Z_BUF_ERROR else { throw failure(status) }
                if stream.avail_in == 0 && fed == inBuffer.count && stream.avail_out > 0 {
                    throw failure(Z_BUF_ERROR)  // room left but no input: the input ended inside the stream
                }
            }
            out.removeLast(out.count - produced)
            return (out, Int(stream.total_in))
        }
    }
}

/// DEFLATE encoding through zlib.
public enum Deflate {
    /// A zlib stream (RFC 1950) of `input` at zlib's `level` (0–9); the same bytes for the same input and zlib.
    public static func zlib(_ input: [UInt8], level: Int32 = 6) throws(ZlibError) -> [UInt8] {
        var length = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(length))
        let status = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in compress2(o.baseAddress, &length, i.baseAddress, uLong(i.count), level)
            }
        }
        guard status == Z_OK else {
            throw ZlibError(message: "zlib could not compress \(input.count) bytes (status \(status))", offset: 0)
        }
        out.removeLast(out.count - Int(length))
        return out
    }
}
