// The Swift CLIP tokenizer against transformers' CLIPTokenizer (slow, ftfy installed) on the committed prompts.

import AmusedBind
import AmusedModel
import AmusedTestSupport
import Testing

@Suite("CLIP tokenizer")
struct TokenizerTests {
    static let tokenizer: CLIPTokenizer? = try? AmusedComponents.loadTokenizer(
        folder: FixturePaths.path("records/tiny-256/model/tokenizer"))

    /// Identical ids on every prompt of Fixtures/tokenizer/prompts.json (330 prompts: unicode, emoji, accents,
    /// punctuation runs, numbers, runs of spaces, upper case, prompts far over 77 tokens, empty). Exact: no tolerance.
    @Test func everyCommittedPromptMatches() throws {
        let tokenizer = try #require(Self.tokenizer)
        let cases = try #require(FixturePaths.json("tokenizer/prompts.json")["cases"]?.arrayValue)
        #expect(cases.count >= 300)
        var mismatches: [String] = []
        for c in cases {
            let prompt = c["prompt"]!.stringValue!
            let expected = c["input_ids"]!.arrayValue!.map { Int64($0.intValue!) }
            if tokenizer.encode(prompt) != expected { mismatches.append(prompt) }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) prompts differ: \(mismatches.prefix(5))")
    }

    /// One prompt of Fixtures/tokenizer/ftfy-prompts.json: what `ftfy.fix_text` returned and the 77 ids.
    struct FTFYCase {
        /// The prompt.
        let prompt: String
        /// `ftfy.fix_text(prompt)` (ftfy 6.3.1).
        var fixed: String
        /// transformers' input_ids, padded back to 77 with 49407.
        var ids: [Int64]
    }

    /// The cases of Fixtures/tokenizer/ftfy-prompts.json (written by Tools/ftfy_cases.py).
    static func ftfyCases() throws -> [FTFYCase] {
        let cases = try #require(FixturePaths.json("tokenizer/ftfy-prompts.json")["cases"]?.arrayValue)
        return try cases.map { c in
            var ids = try #require(c["ids"]?.arrayValue).map { Int64($0.intValue!) }
            while ids.count < 77 { ids.append(49407) }
            let prompt = try #require(c["prompt"]?.stringValue)
            // "fixed" is recorded only where ftfy changed the prompt.
            let fixed = try c["fixed"].map { try #require($0.stringValue) } ?? prompt
            return FTFYCase(prompt: prompt, fixed: fixed, ids: ids)
        }
    }

    /// The cases whose cleaned text (compared code point by code point: Swift's `==` would call canonically
    /// equivalent strings equal) or ids differ, described.
    static func ftfyMismatches(_ cases: [FTFYCase], _ tokenizer: CLIPTokenizer) -> [String] {
        var out: [String] = []
        for c in cases {
            let fixed = FTFY.fixText(c.prompt)
            if !fixed.unicodeScalars.elementsEqual(c.fixed.unicodeScalars) {
                out.append(
                    "fix_text \(c.prompt.debugDescription): \(fixed.debugDescription) ≠ \(c.fixed.debugDescription)")
            }
            let ids = tokenizer.encode(c.prompt)
            if ids != c.ids { out.append("ids \(c.prompt.debugDescription): \(ids) ≠ \(c.ids)") }
        }
        return out
    }

    /// Every prompt of Fixtures/tokenizer/ftfy-prompts.json (2517 prompts from Tools/ftfy_cases.py: ftfy's own test
    /// cases and docstring examples, mojibake of many languages in the ten encodings ftfy tries, once, twice and in part, HTML entities,
    /// control characters, terminal escapes, line breaks, CESU-8, widths, ligatures, quotes, NFC/NFD, mixtures) is
    /// cleaned exactly as `ftfy.fix_text` cleans it and gets exactly transformers' ids.
    @Test func everyFTFYPromptMatches() throws {
        let tokenizer = try #require(Self.tokenizer)
        let cases = try Self.ftfyCases()
        #expect(cases.count >= 1000)
        // Most prompts are ones ftfy changes.
        #expect(cases.filter { !$0.prompt.unicodeScalars.elementsEqual($0.fixed.unicodeScalars) }.count >= 1000)
        let mismatches = Self.ftfyMismatches(cases, tokenizer)
        #expect(mismatches.isEmpty, "\(mismatches.count) differ: \(mismatches.prefix(5))")
    }

    /// The check above is not vacuous: a record altered in memory (one id, one cleaned text that differs from the
    /// output only by canonical equivalence) is reported, and nothing else is.
    @Test func ftfyCheckCatchesAlteredRecords() throws {
        let tokenizer = try #require(Self.tokenizer)
        var cases = Array(try Self.ftfyCases().prefix(200))
        let a = try #require(cases.firstIndex { !$0.prompt.unicodeScalars.elementsEqual($0.fixed.unicodeScalars) })
        cases[a].ids[1] += 1
        let b = try #require(cases.firstIndex { $0.fixed == "Pérez" })
        cases[b].fixed = "Pe\u{301}rez"
        #expect(cases[b].fixed == "Pérez")  // equal to Swift's ==, different code points
        let mismatches = Self.ftfyMismatches(cases, tokenizer)
        #expect(mismatches.count == 2)
        #expect(mismatches.first?.hasPrefix("ids \(cases[a].prompt.debugDescription)") == true)
        #expect(mismatches.last?.hasPrefix("fix_text \(cases[b].prompt.debugDescription)") == true)
    }

    /// Python's `str.lower()`, which the tokenizer applies after cleaning, makes a word-final Σ a final ς.
    @Test func finalSigma() throws {
        let tokenizer = try #require(Self.tokenizer)
        #expect(tokenizer.encode("ΟΔΟΣ") == tokenizer.encode("οδος"))
        #expect(tokenizer.encode("ΟΔΟΣ") != tokenizer.encode("οδοσ"))
    }

    @Test func photoOfACat() throws {
        let tokenizer = try #require(Self.tokenizer)
        #expect(
            Array(tokenizer.encode("a photo of a cat").prefix(8)) == [49406, 320, 1125, 539, 320, 2368, 49407, 49407])
    }
}
