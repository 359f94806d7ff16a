// Inputs that trapped before the size audit in the read stage's writers and helpers; each must now be a typed error.

import AmusedCore
import AmusedRead
import Testing

@Suite("audit regressions (read)")
struct ReadAuditRegressionTests {
    /// The writer summed the tensors' byte counts unchecked: sources whose sizes each fit but whose total does not.
    @Test func safetensorsPlanWhoseOffsetsOverflow() throws {
        // Each of 2^60 − 1 bytes (the largest whose bit count fits); the ninth ends past 2^63.
        let entries = (0..<9).map { (name: "t\($0)", dtype: DType.u8, shape: [(1 << 60) - 1]) }
        let error = try #require(throws: ReadError.self) { try SafetensorsWriter.plan(entries: entries) }
        #expect(error.family == .arithmeticOverflow && error.field == "t8")
    }
}
