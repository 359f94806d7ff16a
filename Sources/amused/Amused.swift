// The `amused` command line: a thin skin over the AmusedKit libraries.

import AmusedKernels
import ArgumentParser
import AmusedRead
import Foundation

/// Exit codes `amused` documents (also in the README).
enum ExitCodes {
    /// Bad input: a file that cannot be read, parsed or validated.
    static let badInput: Int32 = 1
    /// Parity failed (reserved for `verify`).
    static let parityFailed: Int32 = 3
}

@main
struct Amused: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amused",
        abstract: "Take an aMUSEd checkpoint to an edge device and prove nothing was lost on the way.",
        discussion: """
            Exit codes: 0 success; 1 bad input (the message names the file, key or byte offset); \
            3 parity failed; 64 usage error.
            """,
        version: AmusedVersion.toolkit,
        subcommands: [Generate.self, Inspect.self, Verify.self, Convert.self, Bench.self, Version.self, HDF5Helper.self]
    )

    /// Tunes the allocator for large activations, then parses the command line and runs the subcommand.
    static func main() {
        Kernels.configureAllocator()
        // Past a file-size limit (ulimit -f), write(2) then fails with EFBIG and the command reports it and leaves the
        // destination as it was, instead of being killed by SIGXFSZ half-way through a temporary file.
        signal(SIGXFSZ, SIG_IGN)
        main(nil)
    }
}

/// Runs `body`, printing a read error to stderr and exiting with the bad-input code.
func runReporting(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ReadError {
        FileHandle.standardError.write(Data(("error: " + (error.errorDescription ?? "\(error)") + "\n").utf8))
        throw ExitCode(ExitCodes.badInput)
    }
}

/// Writes `text` to stdout.
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}
