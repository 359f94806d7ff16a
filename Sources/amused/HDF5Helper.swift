// `amused hdf5-helper IN OUT`: the child process HDF5 files are read in (see AmusedRead's HDF5Isolation). The parent
// only ever parses the safetensors file this writes.

import AmusedRead
import ArgumentParser
import Foundation

struct HDF5Helper: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hdf5-helper", abstract: "Internal: read an HDF5 file in isolation.", shouldDisplay: false)

    @Argument var input: String
    @Argument var output: String

    func run() throws {
        // Test hook: crash the way a libhdf5 memory-safety bug would, to exercise the parent's handling.
        if ProcessInfo.processInfo.environment["AMUSED_HDF5_HELPER_SIMULATE_CRASH"] == "1" {
            UnsafeMutablePointer<Int>(bitPattern: 0x10)!.pointee = 1  // a real invalid write, as a C bug makes
        }
        guard HDF5Isolation.serve(input: input, output: output) else { throw ExitCode(ExitCodes.badInput) }
    }
}
