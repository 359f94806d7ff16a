// Every committed fuzz corpus input (Tests/Fuzz/corpus/<target>/) replayed once through its target, in this
// process: an input that once crashed a reader crashes this test run if the bug comes back. New fuzzing happens
// outside CI (Tools/fuzz.sh TARGET SECONDS).

import AmusedCore
import AmusedFuzzTargets
import AmusedRead
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

    /// Files the fuzzer found that crash libhdf5 itself (Tests/Fuzz/crashers/hdf5, Debian's libhdf5 1.10.8: a SEGV in
    /// H5F__accum_read under H5G__node_sumup, and from the fork-mode run of hdf5-inprocess the smallest input of each
    /// signal among its 164 crashes, a SEGV and a floating-point exception): read the way every command and library
    /// user reads HDF5 — in the helper process — each is a `malformed` error and this process lives on. The helper is
    /// started once per process and reads each file in a fresh fork of itself: after each crash, the same helper
    /// reads a good file to h5py's values (nothing a crashing file did reaches the next).
    @Test func theHelperAbsorbsLibHDF5Crashes() throws {
        let good = FixturePaths.path("formats/weights.h5")
        let expected = try HDF5File(path: good)
        let folder = FixturePaths.repo + "/Tests/Fuzz/crashers/hdf5"
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(!files.isEmpty)
        for file in files {
            let error = try #require(throws: ReadError.self) {
                let source = try openWeights(path: folder + "/" + file)
                for name in source.names { _ = try source.tensor(named: name) }
            }
            #expect(error.family == .malformed && error.message.contains("crashed"), "\(file): \(error)")
            let after = try openWeights(path: good)
            #expect(!(after is HDF5File) && Set(after.names) == Set(expected.names), "after \(file)")
            for name in expected.names {
                #expect(try after.tensor(named: name).doubles() == expected.tensor(named: name).doubles(), "\(name)")
            }
        }
    }

    /// Every target has a folder of seeds and a dictionary of its format's tokens.
    @Test func everyTargetHasADictionary() throws {
        for t in FuzzTargets.all {
            let dict = FixturePaths.repo + "/Tests/Fuzz/dict/\(t.name).dict"
            #expect(FileManager.default.fileExists(atPath: dict), "missing \(dict)")
        }
    }
}
