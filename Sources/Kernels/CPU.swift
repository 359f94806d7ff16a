// The CPU the kernels run on, for benchmark reports: the same machine kind comes with different CPUs (AMD Zen 3,
// Zen 4, Zen 5 seen), and which kernels run — and how fast — depends on it.

import CGemm

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Kernels {
    /// The vector extensions that decide which kernels run, in the order they are reported.
    static let reportedExtensions = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"]

    /// `AMD EPYC (family 25, model 1); avx2 fma` on Linux (from /proc/cpuinfo), the brand string on Apple platforms.
    public static var cpuDescription: String {
        #if os(Linux)
        guard let file = fopen("/proc/cpuinfo", "r") else { return "unknown CPU" }
        defer { fclose(file) }
        var fields: [String: String] = [:]
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        // The first processor's block is enough: every core of these machines is the same.
        while getline(&line, &capacity, file) > 0, let l = line {
            let text = String(cString: l)
            if text == "\n" { break }
            let parts = text.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingSpaces, value = parts[1].trimmingSpaces
            if fields[key] == nil { fields[key] = value }
        }
        let flags = Set((fields["flags"] ?? "").split(separator: " ").map(String.init))
        let vector = reportedExtensions.filter(flags.contains).joined(separator: " ")
        return "\(fields["model name"] ?? "unknown CPU") (family \(fields["cpu family"] ?? "?"), model "
            + "\(fields["model"] ?? "?")); \(vector.isEmpty ? "no AVX2" : vector)"
        #else
        var size = 0
        sysctlbyname("machdep.cpu.brand_string", nil, &size, nil, 0)
        var buffer = [CChar](repeating: 0, count: max(size, 1))
        sysctlbyname("machdep.cpu.brand_string", &buffer, &size, nil, 0)
        return String(cString: buffer)
        #endif
    }
}

extension Kernels {
    /// One core's peak float32 FMA rate in GFLOP/s, measured now (about half a second; the best of three rounds):
    /// what a benchmark's GFLOP/s is a fraction of. 0 on CPUs without AVX2+FMA or AVX-512.
    public static func measuredFMAPeak() -> Double {
        (0..<3).map { _ in amused_fma_peak_gflops(100_000_000) }.max() ?? 0
    }

    /// The calling core's int16 multiply-add rate in GOP/s (VPMADDWD + VPADDD; 0 without AVX2), best of three: the
    /// ceiling of the AVX2 int8 kernel, as `measuredFMAPeak` is the float32 one's.
    public static func measuredInt16Peak() -> Double {
        (0..<3).map { _ in amused_int16_peak_gops(100_000_000) }.max() ?? 0
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(
            drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" || $0 == "\n" })
                .reversed())
    }
}
