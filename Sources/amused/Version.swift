// `amused version`: the toolkit version and the C libraries it is linked against.

import AmusedKernels
import AmusedPack
import AmusedRead
import ArgumentParser

/// Version strings of the toolkit and its linked libraries.
enum AmusedVersion {
    /// The toolkit's version (the one bundles record).
    static let toolkit = BundleFormat.toolkitVersion

    /// One line per linked library, from the libraries themselves.
    static var libraries: [(String, String)] {
        let read = Dictionary(uniqueKeysWithValues: ReadLibraries.versions)
        return [
            ("json-c", read["json-c"] ?? "?"),
            ("zstd", BundleFormat.zstdVersion),
            ("hdf5", read["hdf5"] ?? "?"),
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
