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

    @Test func photoOfACat() throws {
        let tokenizer = try #require(Self.tokenizer)
        #expect(
            Array(tokenizer.encode("a photo of a cat").prefix(8)) == [49406, 320, 1125, 539, 320, 2368, 49407, 49407])
    }
}
