// port of transformers/models/clip/tokenization_clip.py (the slow CLIPTokenizer, with ftfy installed), v4.57.1

import Foundation

/// CLIP's byte-level BPE tokenizer, as the aMUSEd pipelines call it: text cleaned like ftfy.fix_text, whitespace
/// collapsed, lower-cased, split by CLIP's pattern, BPE-merged; then `<|startoftext|>` … `<|endoftext|>`,
/// truncated to 77 and padded with `<|endoftext|>`.
public struct CLIPTokenizer: Sendable {
    /// Token → id.
    let encoder: [String: Int]
    /// Merge pair → rank.
    let ranks: [Pair: Int]
    /// Byte → printable scalar (GPT-2's `bytes_to_unicode`).
    let byteEncoder: [Character]
    /// `<|startoftext|>`.
    public let bosId: Int
    /// `<|endoftext|>` (also unknown and padding).
    public let eosId: Int
    /// Padding id (`<|endoftext|>` in the released tokenizer).
    public let padId: Int
    /// Sequence length (77).
    public let maxLength: Int

    struct Pair: Hashable, Sendable {
        let a: String
        let b: String
    }

    /// Builds the tokenizer from the contents of `vocab.json` (token → id) and the lines of `merges.txt`.
    /// Like transformers, the first line of merges.txt (the `#version` header) is skipped and at most
    /// 49152 − 256 − 2 merges are used.
    public init(vocab: [String: Int], mergesText: String, padToken: String = "<|endoftext|>", maxLength: Int = 77)
        throws(ModelError)
    {
        guard let bos = vocab["<|startoftext|>"], let eos = vocab["<|endoftext|>"] else {
            throw .invalidConfig("vocab.json lacks <|startoftext|> or <|endoftext|>")
        }
        guard let pad = vocab[padToken] else { throw .invalidConfig("vocab.json lacks the pad token \(padToken)") }
        let lines = mergesText.trimmingCharacters(in: .whitespacesAndNewlines).split(
            separator: "\n",
            omittingEmptySubsequences: false)
        var ranks: [Pair: Int] = [:]
        for (rank, line) in lines.dropFirst().prefix(49152 - 256 - 2).enumerated() {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { throw .invalidConfig("merges.txt line \(rank + 2) is not a pair: \(line)") }
            let pair = Pair(a: String(parts[0]), b: String(parts[1]))
            if ranks[pair] == nil { ranks[pair] = rank }
        }
        encoder = vocab
        self.ranks = ranks
        byteEncoder = CLIPTokenizer.bytesToUnicode()
        bosId = bos
        eosId = eos
        padId = pad
        self.maxLength = maxLength
    }

    /// GPT-2's reversible byte → printable-character table.
    static func bytesToUnicode() -> [Character] {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return table
    }

    /// The 77 ids for `text`: BOS, up to 75 BPE tokens, EOS, then padding.
    public func encode(_ text: String) -> [Int64] {
        var ids = [bosId]
        ids += tokenIds(text).prefix(maxLength - 2)
        ids.append(eosId)
        while ids.count < maxLength { ids.append(padId) }
        return ids.map(Int64.init)
    }

    /// BPE token ids for `text` without special tokens or padding.
    public func tokenIds(_ text: String) -> [Int] {
        var ids: [Int] = []
        // transformers splits the raw text on the special tokens first (exact, case-sensitive), then cleans and
        // tokenizes each piece separately.
        for piece in splitOnSpecialTokens(text) {
            switch piece {
            case .special(let id): ids.append(id)
            case .text(let s):
                let cleaned = TextCleaner.whitespaceClean(TextCleaner.fixText(s)).lowercased()
                for token in CLIPTokenizer.pretokenize(cleaned) {
                    if token == "<|startoftext|>" || token == "<|endoftext|>" {
                        ids.append(encoder[token]!)
                        continue
                    }
                    let mapped = String(token.utf8.map { byteEncoder[Int($0)] })
                    for bpeToken in bpe(mapped) { ids.append(encoder[bpeToken] ?? eosId) }
                }
            }
        }
        return ids
    }

    enum Piece {
        case special(Int)
        case text(String)
    }

    func splitOnSpecialTokens(_ text: String) -> [Piece] {
        var pieces: [Piece] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            let a = rest.range(of: "<|startoftext|>"), b = rest.range(of: "<|endoftext|>")
            let next = [a.map { ($0, bosId) }, b.map { ($0, eosId) }].compactMap { $0 }
                .min { $0.0.lowerBound < $1.0.lowerBound }
            guard let (range, id) = next else {
                pieces.append(.text(String(rest)))
                break
            }
            if range.lowerBound > rest.startIndex { pieces.append(.text(String(rest[..<range.lowerBound]))) }
            pieces.append(.special(id))
            rest = rest[range.upperBound...]
        }
        return pieces
    }

    /// CLIP's pattern `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
    /// (IGNORECASE), applied left to right over Unicode scalars as the `regex` module applies it.
    static func pretokenize(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var tokens: [String] = []
        var i = 0
        func startsWith(_ s: String) -> Bool {
            let target = Array(s.unicodeScalars)
            guard i + target.count <= scalars.count else { return false }
            for (k, t) in target.enumerated() {
                let c = scalars[i + k]
                if c != t && !(t.properties.isLowercase && String(c).lowercased() == String(t)) { return false }
            }
            return true
        }
        while i < scalars.count {
            let c = scalars[i]
            if let special = ["<|startoftext|>", "<|endoftext|>"].first(where: startsWith) {
                tokens.append(special)
                i += special.unicodeScalars.count
                continue
            }
            if let contraction = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].first(where: startsWith) {
                tokens.append(String(String.UnicodeScalarView(scalars[i..<(i + contraction.count)])))
                i += contraction.count
                continue
            }
            var j = i + 1
            if isLetter(c) {
                while j < scalars.count, isLetter(scalars[j]) { j += 1 }
            } else if isNumber(c) {
                // a single digit
            } else if isWhitespace(c) {
                i += 1
                continue
            } else {
                while j < scalars.count, !isWhitespace(scalars[j]), !isLetter(scalars[j]), !isNumber(scalars[j]) {
                    j += 1
                }
            }
            tokens.append(String(String.UnicodeScalarView(scalars[i..<j])))
            i = j
        }
        return tokens
    }

    static func isLetter(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    static func isNumber(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: true
        default: false
        }
    }

    /// The `regex` module's `\s`: the Unicode White_Space property.
    static func isWhitespace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    /// Byte-pair merges of one pre-token (already byte-mapped), lowest rank first; the last symbol carries `</w>`.
    func bpe(_ token: String) -> [String] {
        var word = token.map(String.init)
        guard !word.isEmpty else { return [] }
        word[word.count - 1] += "</w>"
        if word.count == 1 { return word }
        while word.count > 1 {
            var best: (rank: Int, index: Int)? = nil
            for k in 0..<(word.count - 1) {
                if let r = ranks[Pair(a: word[k], b: word[k + 1])], best == nil || r < best!.rank { best = (r, k) }
            }
            guard let (_, index) = best else { break }
            let first = word[index], second = word[index + 1]
            // Merge every occurrence of the pair, left to right, as the reference loop does.
            var merged: [String] = []
            var k = 0
            while k < word.count {
                if k < word.count - 1 && word[k] == first && word[k + 1] == second {
                    merged.append(first + second)
                    k += 2
                } else {
                    merged.append(word[k])
                    k += 1
                }
            }
            word = merged
        }
        return word
    }
}

/// The parts of `ftfy.fix_text` (ftfy 6.3) that change prompts in practice, then CLIP's `whitespace_clean`.
/// Implemented: HTML entity decoding when the text has no '<' (numeric references and the common named ones),
/// terminal escape removal, Windows-1252/Latin-1 mojibake repair of whole texts, Latin ligatures, full- and
/// half-width forms, curly quotes, control characters, NFC. Not implemented: ftfy's per-segment mojibake heuristics
/// beyond whole-text recoding, and the full HTML5 entity table (rare named entities stay as written).
enum TextCleaner {
    static func fixText(_ input: String) -> String {
        var text = input
        if !text.contains("<") { text = unescapeHTML(text) }
        text = removeTerminalEscapes(text)
        text = fixMojibake(text)
        var out = String.UnicodeScalarView()
        for s in text.unicodeScalars {
            if let lig = ligatures[s.value] {
                out.append(contentsOf: lig.unicodeScalars)
                continue
            }
            if s.value == 0x3000 {
                out.append(" ")
                continue
            }
            if (0xFF01...0xFFEF).contains(s.value) {
                let nfkc = String(s).precomposedStringWithCompatibilityMapping
                out.append(contentsOf: nfkc.unicodeScalars)
                continue
            }
            if s.value == 0x02BC || (0x2018...0x201B).contains(s.value) {
                out.append("'")
                continue
            }
            if (0x201C...0x201F).contains(s.value) {
                out.append("\"")
                continue
            }
            if isRemovedControl(s.value) { continue }
            out.append(s)
        }
        return String(out).precomposedStringWithCanonicalMapping
    }

    /// `re.sub(r"\s+", " ", text).strip()` with the `regex` module's Unicode `\s`.
    static func whitespaceClean(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var pendingSpace = false
        for s in text.unicodeScalars {
            if s.properties.isWhitespace {
                pendingSpace = true
            } else {
                if pendingSpace && !out.isEmpty { out.append(" ") }
                pendingSpace = false
                out.append(s)
            }
        }
        return String(out)
    }

    static let ligatures: [UInt32: String] = [
        0x132: "IJ", 0x133: "ij", 0x149: "ʼn", 0x1F1: "DZ", 0x1F2: "Dz", 0x1F3: "dz", 0x1C4: "DŽ", 0x1C5: "Dž",
        0x1C6: "dž", 0x1C7: "LJ", 0x1C8: "Lj", 0x1C9: "lj", 0x1CA: "NJ", 0x1CB: "Nj", 0x1CC: "nj", 0xFB00: "ff",
        0xFB01: "fi", 0xFB02: "fl", 0xFB03: "ffi", 0xFB04: "ffl", 0xFB05: "ſt", 0xFB06: "st",
    ]

    static func isRemovedControl(_ v: UInt32) -> Bool {
        v <= 0x08 || v == 0x0B || (0x0E...0x1F).contains(v) || v == 0x7F || (0x206A...0x206F).contains(v)
            || v == 0xFEFF || (0xFFF9...0xFFFC).contains(v)
    }

    static let namedEntities: [String: String] = [
        "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": "\u{A0}", "copy": "©", "reg": "®",
        "trade": "™", "hellip": "…", "mdash": "—", "ndash": "–", "lsquo": "‘", "rsquo": "’", "ldquo": "“",
        "rdquo": "”", "laquo": "«", "raquo": "»", "deg": "°", "euro": "€", "pound": "£", "yen": "¥", "cent": "¢",
        "times": "×", "divide": "÷", "middot": "·", "bull": "•", "sect": "§", "para": "¶", "micro": "µ",
        "eacute": "é", "egrave": "è", "ecirc": "ê", "aacute": "á", "agrave": "à", "acirc": "â", "auml": "ä",
        "ouml": "ö", "uuml": "ü", "szlig": "ß", "ccedil": "ç", "ntilde": "ñ", "oacute": "ó", "iacute": "í",
        "uacute": "ú", "Eacute": "É", "Auml": "Ä", "Ouml": "Ö", "Uuml": "Ü", "hearts": "♥", "larr": "←",
        "rarr": "→", "uarr": "↑", "darr": "↓", "frac12": "½", "frac14": "¼", "frac34": "¾", "sup2": "²", "sup3": "³",
    ]

    /// Decodes `&name;`, `&#NNN;` and `&#xHH;` (the semicolon-terminated forms ftfy decodes).
    static func unescapeHTML(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var out = ""
        var rest = Substring(text)
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            let after = rest[rest.index(after: amp)...]
            if let semi = after.prefix(26).firstIndex(of: ";") {
                let body = after[..<semi]
                var decoded: String? = nil
                if body.hasPrefix("#x") || body.hasPrefix("#X") {
                    decoded = UInt32(body.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String($0) }
                } else if body.hasPrefix("#") {
                    decoded = UInt32(body.dropFirst(1)).flatMap(Unicode.Scalar.init).map { String($0) }
                } else if !body.isEmpty, body.count <= 24 {
                    decoded = namedEntities[String(body)]
                }
                if let decoded {
                    out += decoded
                    rest = after[after.index(after: semi)...]
                    continue
                }
            }
            out += "&"
            rest = after
        }
        return out + rest
    }

    /// Removes ANSI terminal escapes (`ESC [ … m` and similar).
    static func removeTerminalEscapes(_ text: String) -> String {
        guard text.unicodeScalars.contains("\u{1B}") else { return text }
        var out = String.UnicodeScalarView()
        var scalars = text.unicodeScalars.makeIterator()
        while let s = scalars.next() {
            guard s == "\u{1B}" else {
                out.append(s)
                continue
            }
            guard let open = scalars.next() else { break }
            guard open == "[" else {
                out.append(s)
                out.append(open)
                continue
            }
            while let t = scalars.next(), !(0x40...0x7E).contains(t.value) {}
        }
        return String(out)
    }

    /// UTF-8 that was decoded as Windows-1252 (or Latin-1) and re-encoded: when every character maps back to one
    /// byte and those bytes are valid UTF-8 with at least one multi-byte sequence, the text is recoded.
    static func fixMojibake(_ text: String) -> String {
        var bytes: [UInt8] = []
        var sawHigh = false
        for s in text.unicodeScalars {
            if s.value < 0x80 {
                bytes.append(UInt8(s.value))
            } else if let b = windows1252Reverse[s.value] {
                bytes.append(b)
                sawHigh = true
            } else if (0x80...0xFF).contains(s.value) {
                bytes.append(UInt8(s.value))
                sawHigh = true
            } else {
                return text
            }
        }
        guard sawHigh, let decoded = String(validating: bytes, as: UTF8.self), decoded != text else { return text }
        return decoded
    }

    static let windows1252Reverse: [UInt32: UInt8] = [
        0x20AC: 0x80, 0x201A: 0x82, 0x0192: 0x83, 0x201E: 0x84, 0x2026: 0x85, 0x2020: 0x86, 0x2021: 0x87,
        0x02C6: 0x88, 0x2030: 0x89, 0x0160: 0x8A, 0x2039: 0x8B, 0x0152: 0x8C, 0x017D: 0x8E, 0x2018: 0x91,
        0x2019: 0x92, 0x201C: 0x93, 0x201D: 0x94, 0x2022: 0x95, 0x2013: 0x96, 0x2014: 0x97, 0x02DC: 0x98,
        0x2122: 0x99, 0x0161: 0x9A, 0x203A: 0x9B, 0x0153: 0x9C, 0x017E: 0x9E, 0x0178: 0x9F,
    ]
}
