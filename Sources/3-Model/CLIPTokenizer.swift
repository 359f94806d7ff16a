// port of transformers/models/clip/tokenization_clip.py (the slow CLIPTokenizer, with ftfy installed), v4.57.1

import Foundation

/// CLIP's byte-level BPE tokenizer, as the aMUSEd pipelines call it: text cleaned by ftfy.fix_text (ported exactly in
/// FTFY.swift), whitespace collapsed, lower-cased as Python does, split by CLIP's pattern, BPE-merged; then
/// `<|startoftext|>` … `<|endoftext|>`, truncated to 77 and padded with `<|endoftext|>`.
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

    /// Two adjacent symbols a merge joins.
    struct Pair: Hashable, Sendable {
        /// The left symbol.
        let a: String
        /// The right symbol.
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
                let cleaned = TextCleaner.lower(TextCleaner.whitespaceClean(TextCleaner.fixText(s)))
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

    /// A piece of the raw text: a special token, or text between them.
    enum Piece {
        /// `<|startoftext|>` or `<|endoftext|>`, by id.
        case special(Int)
        /// Text to clean and tokenize.
        case text(String)
    }

    /// The raw text split on the special tokens, as transformers splits it before cleaning.
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
    /// (IGNORECASE), applied left to right over Unicode scalars as the `regex` module applies it. Two effects of
    /// IGNORECASE in the `regex` module (2025.10.23) beyond ASCII case: 'ſ' (U+017F) matches the 's' of `'s` and
    /// `<|startoftext|>`, and U+0345 COMBINING GREEK YPOGEGRAMMENI, whose case partner Ι is a letter, falls outside
    /// `[^\s\p{L}\p{N}]` while not being in `[\p{L}]` either: no alternative matches it, and findall skips it.
    static func pretokenize(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var tokens: [String] = []
        var i = 0
        func startsWith(_ s: String) -> Bool {
            let target = Array(s.unicodeScalars)
            guard i + target.count <= scalars.count else { return false }
            for (k, t) in target.enumerated() {
                let c = scalars[i + k]
                if c != t && !(t.properties.isLowercase && String(c).lowercased() == String(t))
                    && !(t == "s" && c == "\u{17F}")
                {
                    return false
                }
            }
            return true
        }
        while i < scalars.count {
            let c = scalars[i]
            if let special = ["<|startoftext|>", "<|endoftext|>"].first(where: startsWith) {
                // The text matched (only an exact match is a special token afterwards; "<|ſtartoftext|>" is BPE'd).
                let count = special.unicodeScalars.count
                tokens.append(String(String.UnicodeScalarView(scalars[i..<(i + count)])))
                i += count
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
            } else if isWhitespace(c) || c == "\u{345}" {
                i += 1
                continue
            } else {
                while j < scalars.count, !isWhitespace(scalars[j]), !isLetter(scalars[j]), !isNumber(scalars[j]),
                    scalars[j] != "\u{345}"
                {
                    j += 1
                }
            }
            tokens.append(String(String.UnicodeScalarView(scalars[i..<j])))
            i = j
        }
        return tokens
    }

    /// `\p{L}`.
    static func isLetter(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    /// `\p{N}`.
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

/// CLIP's text cleaning, as transformers' slow CLIPTokenizer does it with ftfy installed:
/// `whitespace_clean(ftfy.fix_text(text)).lower()`.
/// - `fixText` is `ftfy.fix_text` (ftfy 6.3.1, default configuration) exactly, ported in FTFY.swift: per-line
///   segments, HTML entities (the full HTML5 table, numeric references as html.unescape reads them, the "auto" rule
///   that stops unescaping from the first line with a '<'), mojibake in the ten single-byte encodings ftfy tries
///   (judged by its badness pattern, with restore_byte_a0, replace_lossy_sequences, the utf-8-variants decoder for
///   CESU-8 and Java's NUL, decode_inconsistent_utf8 for partly mojibaked text, C1 controls), ligatures, widths,
///   quotes, line breaks, terminal escapes, control characters, NFC, repeated until nothing changes.
/// - `whitespaceClean` is `re.sub(r"\s+", " ", text).strip()`; `lower` is Python's `str.lower()`.
enum TextCleaner {
    /// `ftfy.fix_text(input)`.
    static func fixText(_ input: String) -> String { FTFY.fixText(input) }

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

    /// Python's `str.lower()`: each character's full lower-case mapping (İ → i̇), except that Σ becomes final ς
    /// where CPython's Final_Sigma rule says so (a cased letter before it, skipping case-ignorable ones, and none
    /// after it), which Swift's `lowercased()` does not do.
    static func lower(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        for (i, s) in scalars.enumerated() {
            if s.value == 0x3A3 {
                out.append(isFinalSigma(scalars, at: i) ? "\u{3C2}" : "\u{3C3}")
            } else {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(out)
    }

    /// CPython's `handle_capital_sigma`: `\p{cased} \p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased})`.
    static func isFinalSigma(_ scalars: [Unicode.Scalar], at i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && scalars[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0 && scalars[j].properties.isCased else { return false }
        j = i + 1
        while j < scalars.count && scalars[j].properties.isCaseIgnorable { j += 1 }
        return j == scalars.count || !scalars[j].properties.isCased
    }
}
