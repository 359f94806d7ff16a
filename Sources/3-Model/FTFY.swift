// port of ftfy 6.3.1's fix_text with its default configuration (ftfy/__init__.py, fixes.py, badness.py,
// chardata.py, bad_codecs/sloppy.py, bad_codecs/utf8_variants.py), as transformers' slow CLIPTokenizer calls it.
// The tables and patterns ftfy builds at import time are read from ftfy/ftfy-data.json (written by
// Tools/ftfy_data.py from the pinned ftfy); the algorithm is here.

import Foundation

/// `ftfy.fix_text(text)` (ftfy 6.3.1, default `TextFixerConfig`), exactly: the text is fixed line by line; each line
/// is unescaped (HTML, the "auto" rule), its mojibake decoded (the ten single-byte encodings ftfy tries, in order,
/// with `restore_byte_a0`, `replace_lossy_sequences`, the utf-8-variants decoder, `decode_inconsistent_utf8`, the
/// Latin-1-meant-as-Windows-1252 step and `fix_c1_controls`, judged by ftfy's badness pattern), then C1 controls,
/// Latin ligatures, character widths, curly quotes, line breaks, terminal escapes and control characters are fixed and
/// the result NFC-normalized, again and again until the line stops changing.
///
/// Texts are handled as Unicode scalars throughout (Python compares code points; Swift's `String ==` compares
/// canonically equivalent strings as equal, which would end ftfy's loops early).
public enum FTFY {
    /// A text as Python sees it: a sequence of code points.
    typealias Scalars = [Unicode.Scalar]

    /// `TextFixerConfig.max_decode_length`: the longest segment fixed in one piece (code points).
    static let maxDecodeLength = 1_000_000

    /// `ftfy.fix_text(text)` with the default configuration.
    public static func fixText(_ text: String) -> String {
        String(String.UnicodeScalarView(fixText(Array(text.unicodeScalars))))
    }

    /// `fix_text` over code points: segments end after each "\n" (or after `max_decode_length` code points).
    static func fixText(_ text: Scalars) -> Scalars {
        var out: Scalars = []
        out.reserveCapacity(text.count)
        // unescape_html="auto": ftfy replaces its config with unescape_html=False as soon as a segment contains '<',
        // and keeps the replaced config for every later segment, so one '<' turns HTML unescaping off for the rest
        // of the text (earlier segments were already unescaped).
        var unescape = true
        var pos = 0
        while pos < text.count {
            var end = text[pos...].firstIndex(of: "\n").map { $0 + 1 } ?? text.count
            if end - pos > maxDecodeLength { end = pos + maxDecodeLength }
            let segment = Array(text[pos..<end])
            if unescape && segment.contains("<") { unescape = false }
            out += fixSegment(segment, unescapeHTML: unescape)
            pos = end
        }
        return out
    }

    /// `fix_and_explain(segment)` without the explanation: every fix in ftfy's order, repeated until a whole pass
    /// changes nothing.
    static func fixSegment(_ segment: Scalars, unescapeHTML: Bool) -> Scalars {
        var text = segment
        while true {
            let original = text
            if unescapeHTML { text = self.unescapeHTML(text) }
            // fix_and_explain calls fix_encoding(text) without its config: a fresh default TextFixerConfig, which
            // is the same as ours (the "auto" HTML rule plays no part in fixing encodings).
            text = fixEncoding(text)
            text = fixC1Controls(text)
            text = translate(text, tables.ligatures)
            text = translate(text, tables.widthMap)
            text = uncurlQuotes(text)
            text = fixLineBreaks(text)
            // fix_surrogates: nothing to do. A Swift String cannot hold a lone surrogate, and no step here makes
            // one (the utf-8-variants decoder joins CESU-8 pairs and fails on lone surrogate bytes as Python's
            // strict UTF-8 decoder does; html.unescape turns surrogate references into U+FFFD).
            // remove_terminal_escapes (ANSI_RE starts with ESC; without one there is nothing to match).
            if text.contains("\u{1B}") { text = tables.ansi.sub(text) { _ in [] } }
            text.removeAll { tables.controlChars.contains($0.value) }  // remove_control_chars
            text = nfc(text)
            if text == original { return text }
        }
    }

    // MARK: HTML

    /// `fixes.unescape_html`: each match of `&#?[0-9A-Za-z]{1,24};` that names an entry of `HTML_ENTITIES` (the
    /// HTML5 names ending in ';', plus upper-case forms of the lower-case ones such as `&EACUTE;`) or is a numeric
    /// reference html.unescape decodes completely; everything else is left as written (`&amp` without ';' too).
    static func unescapeHTML(_ text: Scalars) -> Scalars {
        guard text.contains("&") else { return text }
        var out: Scalars = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if text[i] == "&", let end = entityEnd(text, from: i) {
                out += unescapeFixup(text[i..<end])
                i = end
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }

    /// `[0-9A-Za-z]` (ASCII only, as in ftfy's pattern).
    static func isASCIIAlnum(_ s: Unicode.Scalar) -> Bool {
        ("0"..."9").contains(s) || ("A"..."Z").contains(s) || ("a"..."z").contains(s)
    }

    /// Where `HTML_ENTITY_RE` (`&#?[0-9A-Za-z]{1,24};`) matches at `start` (a '&'): the end of the match, or nil.
    /// A run of more than 24 letters and digits cannot be followed by ';' within the limit, so it never matches.
    static func entityEnd(_ text: Scalars, from start: Int) -> Int? {
        var j = start + 1
        if j < text.count && text[j] == "#" { j += 1 }
        let bodyStart = j
        while j < text.count && j - bodyStart < 24 && isASCIIAlnum(text[j]) { j += 1 }
        guard j > bodyStart, j < text.count, text[j] == ";" else { return nil }
        return j + 1
    }

    /// `fixes._unescape_fixup` for one match (`&…;`).
    static func unescapeFixup(_ match: ArraySlice<Unicode.Scalar>) -> Scalars {
        let name = String(String.UnicodeScalarView(match.dropFirst().dropLast()))
        if let value = tables.htmlEntities[name] { return value }
        guard match.dropFirst().first == "#" else { return Array(match) }
        return numericReference(Array(match.dropFirst(2).dropLast())) ?? Array(match)
    }

    /// `html.unescape("&#" + body + ";")` when that consumes the whole reference, as ftfy requires ("if ';' in
    /// unescaped: return text"): nil when html.unescape leaves a ';' behind. html.unescape reads `#[0-9]+;?` or
    /// `#[xX][0-9a-fA-F]+;?`; if the digits stop before the ';' (`&#12ab;`) the ';' survives, and so does a
    /// reference to ';' itself (`&#59;`), which ftfy therefore leaves undecoded.
    static func numericReference(_ body: Scalars) -> Scalars? {
        var value: UInt32 = 0
        let digits: Scalars
        let radix: UInt32
        if let first = body.first, ("0"..."9").contains(first) {
            digits = Array(body.prefix { ("0"..."9").contains($0) })
            radix = 10
            guard digits.count == body.count else { return nil }
        } else if let first = body.first, first == "x" || first == "X" {
            digits = Array(body.dropFirst().prefix { $0.properties.isASCIIHexDigit })
            radix = 16
            guard !digits.isEmpty, digits.count + 1 == body.count else { return nil }
        } else {
            return nil
        }
        for d in digits {
            // Python's int is unbounded; every value past 0x10FFFF is treated alike, so saturate there.
            value = min(value * radix + UInt32(Character(d).hexDigitValue!), 0x11_0000)
        }
        let decoded: Scalars
        if let replacement = tables.htmlInvalidCharrefs[value] {
            decoded = replacement
        } else if (0xD800...0xDFFF).contains(value) || value > 0x10_FFFF {
            decoded = ["\u{FFFD}"]
        } else if tables.htmlInvalidCodepoints.contains(value) {
            decoded = []
        } else {
            decoded = [Unicode.Scalar(value)!]
        }
        return decoded.contains(";") ? nil : decoded
    }

    // MARK: Encodings

    /// `ftfy.fix_encoding(text)`: one-step fixes until the text stops changing.
    static func fixEncoding(_ text: Scalars) -> Scalars {
        var text = text
        while true {
            let previous = text
            text = fixEncodingOneStep(text)
            if text == previous { return text }
        }
    }

    /// `_fix_encoding_one_step_and_explain`.
    static func fixEncodingOneStep(_ text: Scalars) -> Scalars {
        if text.isEmpty { return text }
        // ASCII text, and text without ftfy's "badness", is left alone.
        if text.allSatisfy({ $0.value < 0x80 }) || !tables.badness.search(text) { return text }
        var possible: [String] = []
        for charmap in tables.charmaps {
            guard let encoded = charmap.encode(text) else { continue }  // possible_encoding
            possible.append(charmap.name)
            var bytes = encoded
            // restore_byte_a0, except in MacRoman (where it would read an en dash and a space as UTF-8).
            if charmap.name != "macroman" && tables.alteredUTF8.search(bytes: bytes) { bytes = restoreByteA0(bytes) }
            if charmap.name.hasPrefix("sloppy") { bytes = replaceLossySequences(bytes) }
            // 0xED (CESU-8 surrogates) or 0xC0 (Java's two-byte NUL) switch to the utf-8-variants decoder.
            let decoded =
                bytes.contains(0xED) || bytes.contains(0xC0)
                ? decodeUTF8Variants(bytes) : decodeUTF8(bytes[...])
            // A failed decode moves on to the next encoding; the restored/replaced bytes are thrown away.
            if let decoded { return decoded }
        }
        if tables.utf8Detector.search(text) {
            let fixed = decodeInconsistentUTF8(text)
            if fixed != text { return fixed }
        }
        if possible.contains("latin-1") {
            // ftfy asks for "windows-1252" here, but the list holds "sloppy-windows-1252": this branch (meant to
            // keep text that is both Latin-1 and Windows-1252) is never taken, so Latin-1 text always goes on to the
            // strict Windows-1252 decoding below.
            if possible.contains("windows-1252") { return text }
            // text.encode("latin-1").decode("windows-1252"): fails on the five bytes Windows-1252 leaves undefined.
            let cp1252 = tables.sloppyWindows1252
            if !text.contains(where: { cp1252.strictUndefined.contains($0.value) }) {
                // The strict codec decodes 0x1A as U+001A (the sloppy table's 0x1A is U+FFFD), so only bytes from
                // 0x80 up come from the table.
                let fixed = text.map { $0.value < 0x80 ? $0 : cp1252.decode[Int($0.value)] }
                if fixed != text { return fixed }
            }
        }
        if text.contains(where: isC1) { return fixC1Controls(text) }
        return text
    }

    /// `fixes.restore_byte_a0`: "Ã " before anything but a space or Portuguese "quele/quela/quilo/s " gets its
    /// 0xA0 back (keeping the space); then, inside each `ALTERED_UTF8_RE` match, spaces become 0xA0.
    static func restoreByteA0(_ bytes: [UInt8]) -> [UInt8] {
        let graves = tables.aGraveWord.sub(bytes: bytes) { _ in [0xC3, 0xA0, 0x20] }
        return tables.alteredUTF8.sub(bytes: graves) { match in match.map { $0 == 0x20 ? 0xA0 : $0 } }
    }

    /// `fixes.replace_lossy_sequences`: UTF-8 sequences with bytes lost to 0x1A (U+FFFD in a sloppy codec) or '?',
    /// and any other 0x1A, become the UTF-8 of U+FFFD.
    static func replaceLossySequences(_ bytes: [UInt8]) -> [UInt8] {
        tables.lossyUTF8.sub(bytes: bytes) { _ in [0xEF, 0xBF, 0xBD] }
    }

    /// `fixes.decode_inconsistent_utf8`: each `UTF8_DETECTOR_RE` match shorter than the whole text that looks bad
    /// on its own is fixed with a full, recursive `fix_encoding`.
    static func decodeInconsistentUTF8(_ text: Scalars) -> Scalars {
        tables.utf8Detector.sub(text) { match in
            let substring = Array(match)
            return substring.count < text.count && tables.badness.search(substring) ? fixEncoding(substring) : substring
        }
    }

    /// U+0080…U+009F.
    static func isC1(_ s: Unicode.Scalar) -> Bool { (0x80...0x9F).contains(s.value) }

    /// `fixes.fix_c1_controls`: C1 controls read as sloppy Windows-1252 (the five undefined bytes stay as they are).
    static func fixC1Controls(_ text: Scalars) -> Scalars {
        guard text.contains(where: isC1) else { return text }
        let table = tables.sloppyWindows1252.decode
        return text.map { isC1($0) ? table[Int($0.value)] : $0 }
    }

    /// Python's strict UTF-8 decoder (`bytes.decode("utf-8")`): nil where it raises. Well-formed UTF-8 only: no
    /// overlong forms, no surrogates, nothing past U+10FFFF, no truncated sequence.
    static func decodeUTF8(_ bytes: ArraySlice<UInt8>) -> Scalars? {
        var out: Scalars = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        let end = bytes.endIndex
        func continuation(_ k: Int, _ range: ClosedRange<UInt8> = 0x80...0xBF) -> UInt32? {
            k < end && range.contains(bytes[k]) ? UInt32(bytes[k] & 0x3F) : nil
        }
        while i < end {
            let b = bytes[i]
            switch b {
            case 0x00...0x7F:
                out.append(Unicode.Scalar(b))
                i += 1
            case 0xC2...0xDF:
                guard let c1 = continuation(i + 1) else { return nil }
                out.append(Unicode.Scalar(UInt32(b & 0x1F) << 6 | c1)!)
                i += 2
            case 0xE0...0xEF:
                let second: ClosedRange<UInt8> = b == 0xE0 ? 0xA0...0xBF : b == 0xED ? 0x80...0x9F : 0x80...0xBF
                guard let c1 = continuation(i + 1, second), let c2 = continuation(i + 2) else { return nil }
                out.append(Unicode.Scalar(UInt32(b & 0x0F) << 12 | c1 << 6 | c2)!)
                i += 3
            case 0xF0...0xF4:
                let second: ClosedRange<UInt8> = b == 0xF0 ? 0x90...0xBF : b == 0xF4 ? 0x80...0x8F : 0x80...0xBF
                guard let c1 = continuation(i + 1, second), let c2 = continuation(i + 2), let c3 = continuation(i + 3)
                else { return nil }
                out.append(Unicode.Scalar(UInt32(b & 0x07) << 18 | c1 << 12 | c2 << 6 | c3)!)
                i += 4
            default:
                return nil
            }
        }
        return out
    }

    /// `bytes.decode("utf-8-variants")` (bad_codecs/utf8_variants.py, final, strict): standard UTF-8 plus CESU-8
    /// surrogate pairs and Java's 0xC0 0x80 for U+0000; nil where the codec raises. Reproduces the codec's step by
    /// step structure, including the `$` of its byte patterns, which also matches just before a final b"\n".
    static func decodeUTF8Variants(_ bytes: [UInt8]) -> Scalars? {
        let n = bytes.count
        // `$` (no MULTILINE): the end, or just before a b"\n" that ends the input.
        func atEnd(_ k: Int) -> Bool { k == n || (k == n - 1 && bytes[n - 1] == 0x0A) }
        // A sequence of groups `(class|$)`, each taking one byte of its class or, failing that, matching `$`
        // without consuming anything, tried with the regex engine's backtracking.
        func groups(_ classes: ArraySlice<ClosedRange<UInt8>>, at k: Int) -> Bool {
            guard let first = classes.first else { return true }
            if k < n && first.contains(bytes[k]) && groups(classes.dropFirst(), at: k + 1) { return true }
            return atEnd(k) && groups(classes.dropFirst(), at: k)
        }
        let cesu8: [ClosedRange<UInt8>] = [0xA0...0xAF, 0x80...0xBF, 0xED...0xED, 0xB0...0xBF, 0x80...0xBF]
        // SPECIAL_BYTES_RE = NULL_EXPR | CESU8_EXPR | SURROGATE_EXPR, matched at k.
        func special(at k: Int) -> Bool {
            switch bytes[k] {
            case 0xC0: return groups([0x80...0x80], at: k + 1)
            case 0xED: return groups(cesu8[...], at: k + 1) || groups([0xA0...0xBF, 0x80...0xBF], at: k + 1)
            default: return false
            }
        }
        var out: Scalars = []
        var pos = 0
        while pos < n {
            guard let cutoff = (pos..<n).first(where: special(at:)) else {
                guard let rest = decodeUTF8(bytes[pos...]) else { return nil }
                return out + rest
            }
            if cutoff > pos {
                guard let part = decodeUTF8(bytes[pos..<cutoff]) else { return nil }
                out += part
                pos = cutoff
                continue
            }
            if bytes[pos] == 0xC0 {
                // "\xc0" and one more byte: U+0000. The pattern also matched b"\xc0\n" at the end (`$`), and the
                // codec then takes those two bytes as U+0000 as well, swallowing the "\n".
                guard n - pos > 1 else { return nil }
                out.append("\u{0}")
                pos += 2
            } else if n - pos < 6 {
                // Fewer than six bytes from a 0xED: the standard decoder takes the rest (a Hangul syllable, or an
                // error).
                guard let rest = decodeUTF8(bytes[pos...]) else { return nil }
                return out + rest
            } else if groups(cesu8[...], at: pos + 1) {
                // The six bytes 11101101 1010abcd 10efghij 11101101 1011klmn 10opqrst, read as ftfy reads them
                // (a `$` match at the last byte lets a final "\n" stand in for it, and its bits are used).
                let b = bytes[pos..<(pos + 6)].map(UInt32.init)
                let value = ((b[1] & 0x0F) << 16) + ((b[2] & 0x3F) << 10) + ((b[4] & 0x0F) << 6) + (b[5] & 0x3F)
                out.append(Unicode.Scalar(value + 0x1_0000)!)
                pos += 6
            } else {
                // Not CESU-8: the three bytes from 0xED go to the standard decoder (a lone surrogate raises).
                guard let part = decodeUTF8(bytes[pos..<(pos + 3)]) else { return nil }
                out += part
                pos += 3
            }
        }
        return out
    }

    // MARK: Character fixes

    /// `str.translate` with a table of code point → replacement.
    static func translate(_ text: Scalars, _ table: [UInt32: Scalars]) -> Scalars {
        guard text.contains(where: { table[$0.value] != nil }) else { return text }
        var out: Scalars = []
        out.reserveCapacity(text.count)
        for s in text {
            if let replacement = table[s.value] { out += replacement } else { out.append(s) }
        }
        return out
    }

    /// `fixes.uncurl_quotes`: U+201C…U+201F become '"', U+02BC and U+2018…U+201B become "'".
    static func uncurlQuotes(_ text: Scalars) -> Scalars {
        text.map { s in
            if (0x201C...0x201F).contains(s.value) { return "\"" }
            if s.value == 0x02BC || (0x2018...0x201B).contains(s.value) { return "'" }
            return s
        }
    }

    /// `fixes.fix_line_breaks`: "\r\n", then lone "\r", U+2028, U+2029 and U+0085 become "\n".
    static func fixLineBreaks(_ text: Scalars) -> Scalars {
        var out: Scalars = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            switch text[i].value {
            case 0x0D:
                out.append("\n")
                if i + 1 < text.count && text[i + 1] == "\n" { i += 1 }
            case 0x2028, 0x2029, 0x85: out.append("\n")
            default: out.append(text[i])
            }
            i += 1
        }
        return out
    }

    /// `unicodedata.normalize("NFC", text)`.
    static func nfc(_ text: Scalars) -> Scalars {
        // ASCII is already NFC.
        if text.allSatisfy({ $0.value < 0x80 }) { return text }
        let string = String(String.UnicodeScalarView(text))
        return Array(string.precomposedStringWithCanonicalMapping.unicodeScalars)
    }

    // MARK: Data

    /// ftfy's import-time tables, read once from the bundled ftfy/ftfy-data.json.
    static let tables: FTFYTables = {
        guard
            let url = Bundle.module.url(forResource: "ftfy-data", withExtension: "json", subdirectory: "ftfy")
                ?? Bundle.module.url(forResource: "ftfy-data", withExtension: "json")
        else { preconditionFailure("AmusedModel's resource ftfy/ftfy-data.json is missing") }
        do {
            return try FTFYTables(json: Data(contentsOf: url))
        } catch {
            preconditionFailure("AmusedModel's resource ftfy/ftfy-data.json cannot be read: \(error)")
        }
    }()
}

/// The data ftfy builds at import time (see Tools/ftfy_data.py): the single-byte encodings, the HTML tables, the
/// width and ligature maps, the control characters `remove_control_chars` deletes, and the compiled patterns.
struct FTFYTables: Sendable {
    /// One of `chardata.CHARMAP_ENCODINGS`.
    struct Charmap: Sendable {
        /// ftfy's name for it ("latin-1", "sloppy-windows-1252", …, "cp437").
        let name: String
        /// What each byte decodes to.
        let decode: [Unicode.Scalar]
        /// Code point → byte, for exactly the characters `possible_encoding` accepts: bytes 0x00-0x19 and
        /// 0x1B-0x7F as themselves, plus what 0x80-0xFF and 0x1A decode to (U+FFFD for 0x1A in a sloppy codec).
        let encodeTable: [UInt32: UInt8]
        /// The bytes the strict (non-sloppy) codec leaves undefined.
        let strictUndefined: Set<UInt32>

        /// `text.encode(name)` when `possible_encoding(text, name)`, else nil.
        func encode(_ text: [Unicode.Scalar]) -> [UInt8]? {
            var out: [UInt8] = []
            out.reserveCapacity(text.count)
            for s in text {
                guard let b = encodeTable[s.value] else { return nil }
                out.append(b)
            }
            return out
        }
    }

    /// The encodings, in the order ftfy tries them.
    let charmaps: [Charmap]
    /// sloppy-windows-1252 (for `fix_c1_controls` and the Latin-1 → Windows-1252 step).
    let sloppyWindows1252: Charmap
    /// `HTML_ENTITIES`, keyed by the name between '&' and ';'.
    let htmlEntities: [String: [Unicode.Scalar]]
    /// html.unescape's `_invalid_charrefs` (numeric references replaced as HTML5 says).
    let htmlInvalidCharrefs: [UInt32: [Unicode.Scalar]]
    /// html.unescape's `_invalid_codepoints` (numeric references that decode to nothing).
    let htmlInvalidCodepoints: Set<UInt32>
    /// `WIDTH_MAP`.
    let widthMap: [UInt32: [Unicode.Scalar]]
    /// `LIGATURES`.
    let ligatures: [UInt32: [Unicode.Scalar]]
    /// `CONTROL_CHARS` (removed).
    let controlChars: Set<UInt32>
    /// `badness.BADNESS_RE` (`is_bad` is a search).
    let badness: PatternMatcher
    /// `chardata.UTF8_DETECTOR_RE`.
    let utf8Detector: PatternMatcher
    /// `fixes.ANSI_RE`.
    let ansi: PatternMatcher
    /// `chardata.ALTERED_UTF8_RE` (bytes).
    let alteredUTF8: PatternMatcher
    /// `fixes.A_GRAVE_WORD_RE` (bytes).
    let aGraveWord: PatternMatcher
    /// `chardata.LOSSY_UTF8_RE` (bytes).
    let lossyUTF8: PatternMatcher

    /// The file's layout.
    private struct File: Decodable {
        struct Charmap: Decodable {
            let name: String
            let decode: [UInt32]
            let strictUndefined: [UInt32]
        }
        let charmaps: [Charmap]
        let htmlEntities: [String: String]
        let htmlInvalidCharrefs: [String: String]
        let htmlInvalidCodepoints: [UInt32]
        let widthMap: [String: String]
        let ligatures: [String: String]
        let controlChars: [UInt32]
        let regexes: [String: String]
    }

    /// A malformed data file.
    struct DataError: Error, CustomStringConvertible {
        /// What is wrong.
        let description: String
    }

    /// Parses ftfy-data.json and compiles its patterns.
    init(json: Data) throws {
        let file = try JSONDecoder().decode(File.self, from: json)
        func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }
        func codeKeyed(_ table: [String: String]) throws -> [UInt32: [Unicode.Scalar]] {
            var out: [UInt32: [Unicode.Scalar]] = [:]
            for (key, value) in table {
                guard let k = UInt32(key) else { throw DataError(description: "bad code point key \(key)") }
                out[k] = scalars(value)
            }
            return out
        }
        var charmaps: [Charmap] = []
        for c in file.charmaps {
            guard c.decode.count == 256 else { throw DataError(description: "\(c.name): not 256 bytes") }
            let decode = try c.decode.map { v in
                guard let s = Unicode.Scalar(v) else { throw DataError(description: "\(c.name): bad code point") }
                return s
            }
            var encode: [UInt32: UInt8] = [:]
            for b in 0..<256 where b >= 0x80 || b == 0x1A {
                encode[decode[b].value] = UInt8(b)
            }
            for b in 0..<0x80 where b != 0x1A {
                guard decode[b].value == UInt32(b) else { throw DataError(description: "\(c.name): ASCII differs") }
                encode[UInt32(b)] = UInt8(b)
            }
            charmaps.append(
                Charmap(name: c.name, decode: decode, encodeTable: encode, strictUndefined: Set(c.strictUndefined)))
        }
        guard let cp1252 = charmaps.first(where: { $0.name == "sloppy-windows-1252" }) else {
            throw DataError(description: "no sloppy-windows-1252")
        }
        self.charmaps = charmaps
        sloppyWindows1252 = cp1252
        htmlEntities = file.htmlEntities.mapValues(scalars)
        htmlInvalidCharrefs = try codeKeyed(file.htmlInvalidCharrefs)
        htmlInvalidCodepoints = Set(file.htmlInvalidCodepoints)
        widthMap = try codeKeyed(file.widthMap)
        ligatures = try codeKeyed(file.ligatures)
        controlChars = Set(file.controlChars)
        func pattern(_ name: String) throws -> PatternMatcher {
            guard let p = file.regexes[name] else { throw DataError(description: "no pattern \(name)") }
            return try PatternMatcher(p)
        }
        badness = try pattern("badness")
        utf8Detector = try pattern("utf8Detector")
        ansi = try pattern("ansi")
        alteredUTF8 = try pattern("alteredUTF8")
        aGraveWord = try pattern("aGraveWord")
        lossyUTF8 = try pattern("lossyUTF8")
    }
}

/// One of ftfy's patterns, translated to ICU syntax (Tools/ftfy_data.py), matched over code points as Python's `re`
/// matches them. Byte patterns run over text whose characters U+0000-U+00FF stand for the bytes.
/// NSRegularExpression is immutable and documented as safe to share between threads.
final class PatternMatcher: @unchecked Sendable {
    /// The compiled pattern.
    let regex: NSRegularExpression

    /// Compiles an ICU pattern.
    init(_ pattern: String) throws { regex = try NSRegularExpression(pattern: pattern) }

    /// `pattern.search(text) is not None`.
    func search(_ text: [Unicode.Scalar]) -> Bool {
        let string = String(String.UnicodeScalarView(text))
        return regex.firstMatch(in: string, range: NSRange(location: 0, length: string.utf16.count)) != nil
    }

    /// `search` over bytes.
    func search(bytes: [UInt8]) -> Bool { search(bytes.map { Unicode.Scalar($0) }) }

    /// The spans `pattern.finditer(text)` gives, in code points.
    func spans(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        let string = String(String.UnicodeScalarView(text))
        let units = string.utf16.count
        let matches = regex.matches(in: string, range: NSRange(location: 0, length: units))
        guard !matches.isEmpty else { return [] }
        // UTF-16 offset → code point index (matches start and end on code point boundaries).
        var index = [Int](repeating: 0, count: units + 1)
        var u = 0
        for (i, s) in text.enumerated() {
            index[u] = i
            u += s.value > 0xFFFF ? 2 : 1
        }
        index[units] = text.count
        return matches.map { index[$0.range.location]..<index[$0.range.location + $0.range.length] }
    }

    /// `pattern.sub(replace, text)` (the pattern never matches the empty string).
    func sub(_ text: [Unicode.Scalar], _ replace: (ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar])
        -> [Unicode.Scalar]
    {
        Self.splice(text, spans(text), replace)
    }

    /// `sub` over bytes.
    func sub(bytes: [UInt8], _ replace: (ArraySlice<UInt8>) -> [UInt8]) -> [UInt8] {
        Self.splice(bytes, spans(bytes.map { Unicode.Scalar($0) }), replace)
    }

    /// `elements` with each of `spans` (in order, not overlapping) replaced by what `replace` makes of it.
    static func splice<E>(_ elements: [E], _ spans: [Range<Int>], _ replace: (ArraySlice<E>) -> [E]) -> [E] {
        guard !spans.isEmpty else { return elements }
        var out: [E] = []
        out.reserveCapacity(elements.count)
        var last = 0
        for span in spans {
            out += elements[last..<span.lowerBound]
            out += replace(elements[span])
            last = span.upperBound
        }
        out += elements[last...]
        return out
    }
}
