// Per-layer activation traces (`amused verify --trace`): written per case, compared with PyTorch's to find the
// first layer that diverges.

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedRead
import Foundation

extension Verifier {
    /// Writes the Swift activations of a case to `<folder>/<case>.swift.safetensors`.
    func writeTrace(_ trace: Trace, case name: String, folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let tensors = try trace.entries.map { entry in
            (entry.name, try Tensor(floats: entry.values, shape: entry.shape))
        }
        try SafetensorsWriter.write(
            tensors, metadata: [("trace_order", trace.entries.map(\.name).joined(separator: ","))],
            to: "\(folder)/\(name).swift.safetensors")
    }
}

/// Compares a Swift trace with a PyTorch trace of the same case (same names, same layouts) and returns, in the
/// Swift trace's order, each activation's max abs error relative to the reference's largest magnitude.
public func compareTraces(swift: String, torch: String) throws -> [(name: String, relative: Double, maxAbs: Double)] {
    let ours = try SafetensorsFile(path: swift), theirs = try SafetensorsFile(path: torch)
    let order = ours.metadataValue("trace_order")?.split(separator: ",").map(String.init) ?? ours.names
    var rows: [(String, Double, Double)] = []
    for name in order where theirs.names.contains(name) {
        let a = try ours.tensor(named: name).floats(), b = try theirs.tensor(named: name).floats()
        let m = TensorMetrics.floats(name, ours: a, reference: b, tolerance: 0, relative: false)
        rows.append((name, m.maxReference > 0 ? m.maxAbs / m.maxReference : m.maxAbs, m.maxAbs))
    }
    return rows
}
