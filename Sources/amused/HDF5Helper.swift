// HDF5 files are parsed by libhdf5, a large C library with a long list of crash CVEs. The command line therefore
// reads them in a child process (`amused hdf5-helper`), which converts the file to a temporary safetensors file;
// the parent only ever parses safetensors. A child that crashes is reported as a malformed file, never a crash.

import AmusedRead
import AmusedTensors
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
        do {
            let file = try HDF5File(path: input)
            try SafetensorsWriter.write(source: file, to: output)
        } catch let error as ReadError {
            // The parent rebuilds the error from this line.
            let line = [error.family.rawValue, error.field ?? "", error.message].joined(separator: "\t")
            FileHandle.standardError.write(Data((line + "\n").utf8))
            throw ExitCode(ExitCodes.badInput)
        }
    }
}

/// Opens weights for the command line: HDF5 through `amused hdf5-helper` in a child process, the rest in-process.
let isolatedOpener: Checkpoint.Opener = { (path, mapData) throws(ReadError) -> any TensorSource in
    guard (try? WeightFormat.detect(path: path)) == .hdf5 else { return try openWeights(path: path, mapData: mapData) }
    return IsolatedHDF5(path: path, converted: try readHDF5InHelper(path: path))
}

/// The helper's safetensors output presented as the HDF5 file it came from.
struct IsolatedHDF5: TensorSource {
    let path: String
    let converted: SafetensorsFile
    var format: WeightFormat { .hdf5 }
    var infos: [TensorInfo] {
        converted.infos.map { $0.renamed($0.name, fileOffset: 0, path: path) }
    }
    func tensor(named name: String) throws(ReadError) -> Tensor { try converted.tensor(named: name) }
}

/// Runs the helper on `path` and opens its safetensors output (deleted once mapped: the mapping keeps it alive).
func readHDF5InHelper(path: String) throws(ReadError) -> SafetensorsFile {
    let output = NSTemporaryDirectory() + "amused-hdf5-\(UUID().uuidString).safetensors"
    defer { unlink(output) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0].contains("/")
        ? CommandLine.arguments[0] : "/proc/self/exe")
    process.arguments = ["hdf5-helper", path, output]
    // A crash in the child is reported by the parent; Swift's backtrace printer would only add noise.
    process.environment = ProcessInfo.processInfo.environment.merging(["SWIFT_BACKTRACE": "enable=no"]) { $1 }
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    do { try process.run() } catch { throw ReadError(.io, path: path, "cannot start the HDF5 helper: \(error)") }
    let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    if process.terminationReason == .uncaughtSignal {
        throw ReadError(.malformed, path: path,
                        "libhdf5 crashed reading this file (signal \(process.terminationStatus)); it is damaged or hostile")
    }
    guard process.terminationStatus == 0 else {
        let parts = message.split(separator: "\n").last.map {
            $0.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        } ?? []
        if parts.count == 3, let family = ReadError.Family(rawValue: parts[0]) {
            throw ReadError(family, path: path, field: parts[1].isEmpty ? nil : parts[1], parts[2])
        }
        throw ReadError(.malformed, path: path, "the HDF5 helper failed: \(message)")
    }
    return try SafetensorsFile(path: output)
}
