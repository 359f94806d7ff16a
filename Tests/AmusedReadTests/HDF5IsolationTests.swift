// The helper process's output is read through signal interruptions: Foundation's readDataToEndOfFile() traps when
// its read returns EINTR, which fuzzing hit (libFuzzer's SIGALRM, "try! ... Code=4 Interrupted system call") in the
// middle of an isolated HDF5 read. This test interrupts the reader's read(2) hundreds of times and checks every byte
// arrives; it did not make Foundation's call trap on demand here, so it checks the replacement, not the old failure.

import Foundation
import Testing

@testable import AmusedRead

@Suite("HDF5 isolation")
struct HDF5IsolationTests {
    /// The helper forks only while it is alone: here, inside the threaded test runner (one more thread kept waiting to
    /// be sure), it refuses with the reason instead of forking. `amused hdf5-helper` itself is single-threaded: every
    /// HDF5 test reads through it.
    @Test func forksOnlyWhenSingleThreaded() {
        let hold = DispatchSemaphore(value: 0), started = DispatchSemaphore(value: 0)
        Thread {
            started.signal()
            hold.wait()
        }.start()
        started.wait()
        defer { hold.signal() }
        let answer = HDF5Isolation.readForked(input: "/nonexistent.h5", output: "/nonexistent.st", beforeEach: {})
        #expect(answer.hasPrefix("io\t\t") && answer.contains("threads"), "\(answer)")
    }

    @Test func helperOutputIsReadThroughSignals() throws {
        // SIGUSR2 with a handler and no SA_RESTART: each one that lands in read(2) makes it return EINTR.
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        action.sa_flags = 0
        sigemptyset(&action.sa_mask)
        var old = sigaction()
        sigaction(SIGUSR2, &action, &old)
        defer { sigaction(SIGUSR2, &old, nil) }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        let reader = pthread_self()
        let count = 400
        let writer = Thread {
            for i in 0..<count {
                usleep(300)  // the reader is now blocked in read(2), waiting for data
                pthread_kill(reader, SIGUSR2)  // only the reading thread gets it: read(2) returns EINTR
                usleep(100)
                var byte = UInt8(i & 0xFF)
                _ = write(writeEnd, &byte, 1)
            }
            close(writeEnd)
        }
        writer.start()
        let bytes = HDF5Isolation.readToEnd(readEnd)
        close(readEnd)
        #expect(bytes == (0..<count).map { UInt8($0 & 0xFF) })
    }
}
