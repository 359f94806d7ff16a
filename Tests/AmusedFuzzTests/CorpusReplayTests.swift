// Every committed fuzz corpus input (Tests/Fuzz/corpus/<target>/) replayed once through its target, in this
// process: an input that once crashed a reader crashes this test run if the bug comes back. New fuzzing happens
// outside CI (Tools/fuzz.sh TARGET SECONDS).

import AmusedFuzzTargets
import AmusedTestSupport
import Foundation
import Testing

@Suite("fuzz corpora")
struct CorpusReplayTests {
    static let corpus = FixturePaths.repo + "/Tests/Fuzz/corpus"

    @Test(arguments: FuzzTargets.all.map(\.name))
    func replays(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let folder = Self.corpus + "/" + name
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(!files.isEmpty, "no committed corpus for \(name): run Tools/fuzz.sh \(name) SECONDS")
        let start = Date()
        for file in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + file))
            data.withUnsafeBytes { target.run($0) }
        }
        // libFuzzer's timeout is 1 s per input in a release build; a debug build is allowed ten times that on average.
        #expect(Date().timeIntervalSince(start) < Double(files.count) * 10)
    }

    /// Every target has a folder of seeds and a dictionary of its format's tokens.
    @Test func everyTargetHasADictionary() throws {
        for t in FuzzTargets.all {
            let dict = FixturePaths.repo + "/Tests/Fuzz/dict/\(t.name).dict"
            #expect(FileManager.default.fileExists(atPath: dict), "missing \(dict)")
        }
    }
}
