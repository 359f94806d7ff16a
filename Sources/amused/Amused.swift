// The `amused` command line: a thin skin over the AmusedKit libraries.

import AmusedKernels
import AmusedPack
import AmusedRead
import ArgumentParser
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
        subcommands: [
            Convert.self, Verify.self, Generate.self, Finetune.self, Import.self, Export.self, Inspect.self,
            Bench.self, Download.self, Version.self, HDF5Helper.self,
        ]
    )

    /// Tunes the allocator for large activations, then parses the command line and runs the subcommand.
    static func main() {
        Kernels.configureAllocator()
        // Past a file-size limit (ulimit -f), write(2) then fails with EFBIG and the command reports it and leaves the
        // destination as it was, instead of being killed by SIGXFSZ half-way through a temporary file.
        signal(SIGXFSZ, SIG_IGN)
        // AMUSED_PEAK_RSS_FILE: at exit, write this process's own peak resident memory (VmHWM, in KiB) there. The
        // memory tests read it; a parent's wait4 ru_maxrss would also count the parent's memory at spawn time, since
        // posix_spawn runs the child in the parent's address space until it executes.
        if getenv("AMUSED_PEAK_RSS_FILE") != nil { atexit { writePeakResidentMemory() } }
        main(nil)
    }
}

/// Writes VmHWM from /proc/self/status to the file AMUSED_PEAK_RSS_FILE names (Linux; nothing elsewhere).
func writePeakResidentMemory() {
    guard let path = getenv("AMUSED_PEAK_RSS_FILE").map({ String(cString: $0) }),
        let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return }
    let kib = line.split(separator: " ").dropFirst().first.map(String.init) ?? ""
    try? Data((kib + "\n").utf8).write(to: URL(fileURLWithPath: path))
}

/// The one error wrapper of the command line: runs `body`; any error but a usage error or an exit code is printed to
/// stderr (its description names the file, key or offset) and becomes the bad-input exit code, or the parity-failed
/// one for a bundle that failed its parity check.
func reportingErrors<R>(_ body: () throws -> R) throws -> R {
    do {
        return try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as ValidationError {
        throw error
    } catch {
        let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        throw ExitCode(error is ParityFailure ? ExitCodes.parityFailed : ExitCodes.badInput)
    }
}

/// Writes `text` to stdout.
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}
