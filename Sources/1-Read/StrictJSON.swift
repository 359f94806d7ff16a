// Strict JSON (RFC 8259) for headers and configs that strangers wrote: duplicate keys rejected, depth capped,
// numbers kept as their exact text, every offset reported. Each document is also parsed by json-c in strict
// mode, and both parsers must accept it (a checker that parses differently from the loader is a bypass).

import AmusedCore
import CJSONC

/// A parsed JSON value. Numbers keep their source text so that integer grammar can be checked exactly.
public enum JSONValue: Sendable, Equatable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number, as written (for example `"768"`, `"1e-06"`).
    case number(String)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object, keys in document order.
    case object(JSONObject)

    /// The string, if this is one.
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    /// The object, if this is one.
    public var objectValue: JSONObject? { if case .object(let o) = self { o } else { nil } }
    /// The array, if this is one.
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
    /// The Bool, if this is one.
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }

    /// The value as an unsigned 64-bit integer when it is written as one (no sign, fraction or exponent).
    public var uint64Value: UInt64? {
        guard case .number(let text) = self, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return nil
        }
        return UInt64(text)
    }

    /// The value as an `Int` when it is written as an integer that fits.
    public var intValue: Int? {
        guard case .number(let text) = self else { return nil }
        return Int(text)
    }

    /// The value as a `Double` for any number.
    public var doubleValue: Double? {
        guard case .number(let text) = self else { return nil }
        return Double(text)
    }

    /// Looks up `key` when this is an object.
    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    /// Compact JSON text for this value (keys in document order).
    public var serialized: String {
        switch self {
        case .null: "null"
        case .bool(let b): b ? "true" : "false"
        case .number(let n): n
        case .string(let s): JSONValue.quote(s)
        case .array(let a): "[" + a.map(\.serialized).joined(separator: ",") + "]"
        case .object(let o):
            "{"
                + o.entries.map { JSONValue.quote($0.key) + ":" + $0.value.serialized }
                .joined(separator: ",") + "}"
        }
    }

    /// The one way a measured number becomes JSON: integral values as integers, others in full (or to `digits`
    /// significant digits); JSON has no infinities or NaN, so those become the strings "inf", "-inf" and "nan".
    public static func numeric(_ d: Double, digits: Int? = nil) -> JSONValue {
        guard d.isFinite else { return .string(d.isNaN ? "nan" : d > 0 ? "inf" : "-inf") }
        if d == 0 { return .number("0") }
        if let digits { return .number(String(format: "%.\(digits)g", d)) }
        return .number(d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)")
    }

    /// `s` as a JSON string literal (escaping what RFC 8259 requires, plus DEL-free ASCII control characters).
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

/// A JSON object with its keys in document order (keys are unique: duplicates are rejected when parsing).
public struct JSONObject: Sendable, Equatable {
    /// Key/value pairs in document order.
    public private(set) var entries: [(key: String, value: JSONValue)]
    private var index: [String: Int]

    /// An empty object.
    public init() {
        entries = []
        index = [:]
    }

    /// The value for `key`.
    public subscript(key: String) -> JSONValue? { index[key].map { entries[$0].value } }

    /// Keys in document order.
    public var keys: [String] { entries.map(\.key) }

    /// Adds a pair; returns false (and changes nothing) when the key is already present.
    @discardableResult
    public mutating func insert(_ key: String, _ value: JSONValue) -> Bool {
        if index[key] != nil { return false }
        index[key] = entries.count
        entries.append((key, value))
        return true
    }

    /// Sets `key` to `value`: replaced in place when present, appended otherwise.
    public mutating func set(_ key: String, _ value: JSONValue) {
        if let i = index[key] { entries[i].value = value } else { insert(key, value) }
    }

    /// Equal when the same keys map to equal values in the same order.
    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

/// Parses strict JSON and reports errors as `ReadError`s located in the file.
public struct StrictJSONParser {
    /// Deepest nesting accepted (safetensors headers need 3; configs fewer than 10).
    public var maxDepth = 64
    /// Most values in one document, counted as one more than its commas, colons and opening brackets: a safetensors
    /// header takes about fifteen per tensor, so this allows 250 000 tensors while keeping either parser's tree near
    /// 200 MB, whatever a header's length claims.
    public var maxValues = 1 << 22
    /// The file the text came from, for messages.
    public let path: String
    /// Offset of the text's first byte in that file, so errors name file offsets.
    public let baseOffset: Int

    /// A parser for text taken from `path` at byte `baseOffset`.
    public init(path: String, baseOffset: Int = 0) {
        self.path = path
        self.baseOffset = baseOffset
    }

    /// Parses `bytes` as one JSON document (surrounding whitespace allowed), then cross-checks it with json-c.
    public func parse(_ bytes: some Collection<UInt8>) throws(ReadError) -> JSONValue {
        let buffer = ContiguousArray(bytes)
        // Invalid UTF-8 is an error, never repaired with U+FFFD.
        if let bad = firstInvalidUTF8(buffer) {
            throw ReadError(.malformed, path: path, offset: baseOffset + bad, "invalid UTF-8 in JSON text")
        }
        // A bound on the number of values, counted without allocating, caps both trees; json-c parses first and its
        // tree is freed before this parser builds its own, so the two never take memory at once. When json-c
        // refuses, this parser still runs, for its more precise message.
        if let (count, at) = valueCountBound(buffer), count > maxValues {
            throw ReadError(.limitExceeded, path: path, offset: baseOffset + at, "more than \(maxValues) JSON values")
        }
        let jsoncRefusal = crossCheckWithJSONC(buffer)
        var cursor = Cursor(bytes: buffer, parser: self)
        cursor.skipWhitespace()
        let value = try cursor.value(depth: 0)
        cursor.skipWhitespace()
        if cursor.pos != buffer.count {
            throw cursor.error("unexpected bytes after the JSON value")
        }
        if let jsoncRefusal { throw jsoncRefusal }
        return value
    }

    /// json-c's verdict on `buffer` in strict mode: nil when it accepts the whole text.
    private func crossCheckWithJSONC(_ buffer: ContiguousArray<UInt8>) -> ReadError? {
        guard buffer.count < Int32.max, let tok = json_tokener_new_ex(Int32(maxDepth + 1)) else {
            return ReadError(.limitExceeded, path: path, offset: baseOffset, "JSON text too large for json-c")
        }
        defer { json_tokener_free(tok) }
        json_tokener_set_flags(tok, Int32(JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8))
        let outcome: (ok: Bool, end: Int, text: String) = buffer.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { c in
                let obj = json_tokener_parse_ex(tok, c.baseAddress, Int32(c.count))
                let err = json_tokener_get_error(tok)
                defer { if let obj { json_object_put(obj) } }
                return (
                    obj != nil && err == json_tokener_success, Int(json_tokener_get_parse_end(tok)),
                    String(cString: json_tokener_error_desc(err))
                )
            }
        }
        let trailingIsWhitespace = buffer[min(outcome.end, buffer.count)...].allSatisfy(Cursor.isWhitespace)
        guard outcome.ok, trailingIsWhitespace else {
            return ReadError(
                .malformed, path: path, offset: baseOffset + outcome.end,
                "json-c rejects this JSON in strict mode (\(outcome.text))")
        }
        return nil
    }

    /// An upper bound on the values in `b` (one more than the commas, colons and opening brackets outside strings)
    /// and where it passed `maxValues`; nil while it stays within.
    private func valueCountBound(_ b: ContiguousArray<UInt8>) -> (Int, Int)? {
        var count = 1
        var inString = false
        var escaped = false
        for (i, c) in b.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if c == UInt8(ascii: "\\") {
                    escaped = true
                } else if c == 0x22 {
                    inString = false
                }
            } else if c == 0x22 {
                inString = true
            } else if c == UInt8(ascii: ",") || c == UInt8(ascii: ":") || c == UInt8(ascii: "[")
                || c == UInt8(ascii: "{")
            {
                count += 1
                if count > maxValues { return (count, i) }
            }
        }
        return nil
    }

    private func firstInvalidUTF8(_ b: ContiguousArray<UInt8>) -> Int? {
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c < 0x80 {
                i += 1
                continue
            }
            var need = 0
            var minValue: UInt32 = 0
            var value: UInt32 = 0
            switch c {
            case 0xC2...0xDF:
                need = 1
                minValue = 0x80
                value = UInt32(c & 0x1F)
            case 0xE0...0xEF:
                need = 2
                minValue = 0x800
                value = UInt32(c & 0x0F)
            case 0xF0...0xF4:
                need = 3
                minValue = 0x10000
                value = UInt32(c & 0x07)
            default: return i
            }
            guard i + need < n else { return i }
            for k in 1...need {
                let cc = b[i + k]
                guard cc & 0xC0 == 0x80 else { return i }
                value = value << 6 | UInt32(cc & 0x3F)
            }
            if value < minValue || value > 0x10FFFF || (0xD800...0xDFFF).contains(value) { return i }
            i += need + 1
        }
        return nil
    }

    private struct Cursor {
        let bytes: ContiguousArray<UInt8>
        let parser: StrictJSONParser
        var pos = 0

        init(bytes: ContiguousArray<UInt8>, parser: StrictJSONParser) {
            self.bytes = bytes
            self.parser = parser
        }

        static func isWhitespace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }

        func error(_ message: String, at: Int? = nil) -> ReadError {
            ReadError(.malformed, path: parser.path, offset: parser.baseOffset + (at ?? pos), message)
        }

        mutating func skipWhitespace() {
            while pos < bytes.count, Self.isWhitespace(bytes[pos]) { pos += 1 }
        }

        func peek() -> UInt8? { pos < bytes.count ? bytes[pos] : nil }

        mutating func expect(_ literal: String, _ value: JSONValue) throws(ReadError) -> JSONValue {
            for u in literal.utf8 {
                guard peek() == u else { throw error("invalid literal (expected \(literal))") }
                pos += 1
            }
            return value
        }

        mutating func value(depth: Int) throws(ReadError) -> JSONValue {
            guard let c = peek() else { throw error("JSON text ends where a value was expected") }
            switch c {
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("unexpected character 0x\(String(c, radix: 16)) where a JSON value was expected")
            }
        }

        mutating func object(depth: Int) throws(ReadError) -> JSONValue {
            guard depth <= parser.maxDepth else { throw error("JSON nested deeper than \(parser.maxDepth) levels") }
            pos += 1
            var object = JSONObject()
            skipWhitespace()
            if peek() == UInt8(ascii: "}") {
                pos += 1
                return .object(object)
            }
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key") }
                let keyOffset = pos
                let key = try string()
                skipWhitespace()
                guard peek() == UInt8(ascii: ":") else { throw error("expected ':' after key \"\(key)\"") }
                pos += 1
                skipWhitespace()
                let v = try value(depth: depth)
                guard object.insert(key, v) else {
                    throw ReadError(
                        .malformed, path: parser.path, offset: parser.baseOffset + keyOffset,
                        field: key, "duplicate key \"\(key)\"")
                }
                skipWhitespace()
                guard let c = peek() else { throw error("JSON text ends inside an object") }
                pos += 1
                if c == UInt8(ascii: "}") { return .object(object) }
                guard c == UInt8(ascii: ",") else { throw error("expected ',' or '}' in an object", at: pos - 1) }
            }
        }

        mutating func array(depth: Int) throws(ReadError) -> JSONValue {
            guard depth <= parser.maxDepth else { throw error("JSON nested deeper than \(parser.maxDepth) levels") }
            pos += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "]") {
                pos += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth))
                skipWhitespace()
                guard let c = peek() else { throw error("JSON text ends inside an array") }
                pos += 1
                if c == UInt8(ascii: "]") { return .array(items) }
                guard c == UInt8(ascii: ",") else { throw error("expected ',' or ']' in an array", at: pos - 1) }
            }
        }

        mutating func hex4() throws(ReadError) -> UInt32 {
            guard pos + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[pos]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - 0x30)
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - 0x61 + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - 0x41 + 10)
                default: throw error("invalid hex digit in \\u escape")
                }
                v = v << 4 | d
                pos += 1
            }
            return v
        }

        mutating func string() throws(ReadError) -> String {
            let start = pos
            pos += 1
            var scalars = String.UnicodeScalarView()
            var runStart = pos
            func flush(_ s: inout String.UnicodeScalarView, _ from: Int, _ to: Int, _ bytes: ContiguousArray<UInt8>) {
                if to > from { s.append(contentsOf: String(decoding: bytes[from..<to], as: UTF8.self).unicodeScalars) }
            }
            while true {
                guard pos < bytes.count else { throw error("JSON string never ends", at: start) }
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") {
                    flush(&scalars, runStart, pos, bytes)
                    pos += 1
                    return String(scalars)
                }
                if c < 0x20 { throw error("control character 0x\(String(c, radix: 16)) inside a string") }
                if c != UInt8(ascii: "\\") {
                    pos += 1
                    continue
                }
                flush(&scalars, runStart, pos, bytes)
                pos += 1
                guard let e = peek() else { throw error("JSON string ends inside an escape") }
                pos += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    let escapeStart = pos - 2
                    var v = try hex4()
                    if (0xD800...0xDBFF).contains(v) {
                        guard pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"),
                            bytes[pos + 1] == UInt8(ascii: "u")
                        else { throw error("lone surrogate in \\u escape", at: escapeStart) }
                        pos += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else {
                            throw error("lone surrogate in \\u escape", at: escapeStart)
                        }
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(v) {
                        throw error("lone surrogate in \\u escape", at: escapeStart)
                    }
                    scalars.append(Unicode.Scalar(v)!)
                default: throw error("invalid escape \\\(Character(Unicode.Scalar(e)))", at: pos - 2)
                }
                runStart = pos
            }
        }

        mutating func number() throws(ReadError) -> JSONValue {
            let start = pos
            func digits(_ cursor: inout Cursor) -> Int {
                let s = cursor.pos
                while let c = cursor.peek(), c >= 0x30, c <= 0x39 { cursor.pos += 1 }
                return cursor.pos - s
            }
            if peek() == UInt8(ascii: "-") { pos += 1 }
            if peek() == UInt8(ascii: "0") {
                pos += 1
            } else if digits(&self) == 0 {
                throw error("invalid number", at: start)
            }
            if peek() == UInt8(ascii: ".") {
                pos += 1
                guard digits(&self) > 0 else { throw error("invalid number: no digits after '.'", at: start) }
            }
            if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
                pos += 1
                if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { pos += 1 }
                guard digits(&self) > 0 else { throw error("invalid number: no exponent digits", at: start) }
            }
            if let c = peek(), c >= 0x30 && c <= 0x39 { throw error("invalid number: leading zero", at: start) }
            return .number(String(decoding: bytes[start..<pos], as: UTF8.self))
        }
    }
}
