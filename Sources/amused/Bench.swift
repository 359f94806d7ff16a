// `amused bench MODEL`: times the Swift graph on a checkpoint (release builds only give meaningful figures).
// Tools/bench.py runs the PyTorch reference on the same inputs in the same run and prints the ratios.

import AmusedBind
import AmusedKernels
import AmusedModel
import AmusedPack
import AmusedRead
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a transformer forward, a VQ decode and a text encoding on a checkpoint (use a release build).",
        discussion: """
            Inputs are deterministic: token ids i·7919 mod codebook, text features sin(i), micro-conditioning \
            [size, size, 0, 0, 6]; the text encoder gets --batch rows of 77 ids i·7919 mod vocabulary. Prints the best and median of --runs timed runs after one warm-up, and the \
            process's peak RSS after each part. Tools/bench.py runs this and PyTorch side by side.
            """)

    enum Part: String, ExpressibleByArgument, CaseIterable {
        case transformer, vqDecode = "vq-decode", textEncoder = "text-encoder", all
    }

    @Argument(help: "A pipeline folder (e.g. .fullsize/amused-256/model) or an .amused bundle (its weights run as stored).")
    var model: String

    @Option(help: "What to time: transformer, vq-decode, text-encoder or all.")
    var part: Part = .all

    @Option(help: "Batch size of the transformer forward (2 = one guided sampling step).")
    var batch = 2

    @Option(help: "Timed runs after the warm-up.")
    var runs = 3

    @Flag(help: "Print one JSON document.")
    var json = false

    /// A hub id for the model is resolved in the local Hugging Face cache (revision main) before anything runs.
    mutating func validate() throws { model = try runReporting { try HubCache.resolve(model) } }

    func run() throws {
        var results = JSONObject()
        if part == .all || part == .transformer {
            let components = try load([.transformer])
            guard let transformer = components.transformer else { throw ValidationError("\(model) has no transformer") }
            let c = transformer.config
            let grid = c.sampleSize
            let ids = (0..<(batch * grid * grid)).map { Int64(($0 * 7919) % c.codebookSize) }
            let text = (0..<(batch * 77 * c.encoderHiddenSize)).map { Float(sin(Double($0))) }
            let pooled = (0..<(batch * c.condEmbedDim)).map { Float(cos(Double($0))) }
            let size = Float(grid * 16)
            let micro: [Float] = (0..<batch).flatMap { _ -> [Float] in [size, size, 0, 0, 6] }
            let times = try measure {
                let cond = try transformer.conditioning(encoderHiddenStates: text, pooledTextEmb: pooled,
                                                        microConds: micro, batch: batch)
                _ = try transformer(ids, height: grid, width: grid, conditioning: cond)
            }
            results.insert("transformer", report(times, extra: ["batch": batch, "grid": grid]))
        }
        if part == .all || part == .textEncoder {
            let components = try load([.textEncoder])
            guard let encoder = components.textEncoder else { throw ValidationError("\(model) has no text encoder") }
            let ids = (0..<(batch * 77)).map { Int64(($0 * 7919) % encoder.config.vocabSize) }
            let times = try measure { _ = try encoder(ids, batch: batch) }
            results.insert("text_encoder", report(times, extra: ["batch": batch, "tokens": 77]))
        }
        if part == .all || part == .vqDecode {
            let components = try load([.vqvae])
            guard let vq = components.vqvae else { throw ValidationError("\(model) has no VQ model") }
            let grid = 16  // a 256×256 image
            let ids = (0..<(grid * grid)).map { Int64(($0 * 7919) % vq.config.numVqEmbeddings) }
            let times = try measure { _ = try vq.decode(ids, batch: 1, height: grid, width: grid) }
            results.insert("vq_decode", report(times, extra: ["batch": 1, "pixels": grid * vq.config.scaleFactor]))
        }
        if json {
            var document = results
            document.insert("products", .string(Kernels.blasDescription))
            emit(JSONValue.object(document).serialized + "\n")
        } else {
            emit("products: \(Kernels.blasDescription)\n")
            for (name, value) in results.entries {
                emit("\(name): best \(value["best_seconds"]!.serialized) s, median \(value["median_seconds"]!.serialized) s, "
                    + "peak RSS \(value["peak_rss_mib"]!.serialized) MiB\n")
            }
        }
    }

    /// The components `parts` of the model, from a checkpoint or a bundle (digests checked, pages released after).
    func load(_ parts: Set<AmusedComponents.Part>) throws -> AmusedComponents {
        ModelSource.isBundle(model) ? try AmusedComponents(bundle: try AmusedBundle(path: model), only: parts)
            : try AmusedComponents(path: model, only: parts)
    }

    func measure(_ body: () throws -> Void) throws -> [Double] {
        try body()  // warm-up: page in the mapped weights, size the buffers
        var times: [Double] = []
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times
    }

    func report(_ times: [Double], extra: [String: Int]) -> JSONValue {
        var o = JSONObject()
        let sorted = times.sorted()
        o.insert("best_seconds", .number(String(format: "%.3f", sorted[0])))
        o.insert("median_seconds", .number(String(format: "%.3f", sorted[sorted.count / 2])))
        o.insert("runs", .number(String(times.count)))
        o.insert("peak_rss_mib", .number(String(format: "%.0f", peakRSSMiB())))
        for (k, v) in extra.sorted(by: { $0.key < $1.key }) { o.insert(k, .number(String(v))) }
        return .object(o)
    }
}

/// The process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on Apple platforms).
func peakRSSMiB() -> Double {
    var usage = rusage()
    #if os(Linux)
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
    #else
    getrusage(RUSAGE_SELF, &usage)
    return Double(usage.ru_maxrss) / 1_048_576
    #endif
}
