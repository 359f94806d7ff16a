// `amused hdf5-helper`: the child process HDF5 files are read in (see AmusedRead's HDF5Isolation). It answers the
// parent's requests on standard input, reading each file in a fresh fork of itself; the parent only ever parses the
// safetensors files this writes.

import AmusedRead
import ArgumentParser
import Foundation

struct HDF5Helper: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hdf5-helper", abstract: "Internal: read HDF5 files in isolation.", shouldDisplay: false)

    func run() throws {
        let simulateCrash = ProcessInfo.processInfo.environment["AMUSED_HDF5_HELPER_SIMULATE_CRASH"] == "1"
        HDF5Isolation.serveRequests {
            // Test hook: crash the way a libhdf5 memory-safety bug would, to exercise the parent's handling.
            if simulateCrash { UnsafeMutablePointer<Int>(bitPattern: 0x10)!.pointee = 1 }  // a real invalid write
        }
    }
}
