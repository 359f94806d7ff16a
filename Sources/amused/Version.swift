// `amused version`: the toolkit version and the C libraries it is linked against.

import AmusedKernels
import ArgumentParser
import CHDF5
import CJSONC
import CZstd

/// Version strings of the toolkit and its linked libraries.
enum AmusedVersion {
    /// The toolkit's version.
    static let toolkit = "0.1.0"

    /// One line per linked library, from the libraries themselves.
    static var libraries: [(String, String)] {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        H5get_libversion(&major, &minor, &release)
        return [
            ("json-c", String(cString: json_c_version())),
            ("zstd", String(cString: ZSTD_versionString())),
            ("hdf5", "\(major).\(minor).\(release)"),
            ("blas", Kernels.blasDescription),
            ("cpu", Kernels.cpuDescription),
        ]
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the toolkit version and the versions of the C libraries it uses.")

    func run() throws {
        emit("amused \(AmusedVersion.toolkit)\n")
        for (name, version) in AmusedVersion.libraries { emit("  \(name): \(version)\n") }
    }
}
