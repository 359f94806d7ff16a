// `amused bench MODEL`: times the Swift graph on a checkpoint (release builds only give meaningful figures).
// Tools/bench.py runs the PyTorch reference on the same inputs in the same run and prints the ratios.

import AmusedBind
import AmusedCore
import AmusedKernels
import AmusedModel
import AmusedPack
import AmusedRead
import AmusedTrain
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
            process's peak RSS after each part. Tools/bench.py runs this and PyTorch side by side. \
            --part train-step (not part of `all`) times one LoRA fine-tuning step instead: rank 16, alpha 32 on every \
            to_q/to_k/to_v, --batch images with every other token masked, loss, gradients and an AdamW update. \
            --part gradients --reference DIR compares the first step's LoRA gradients with a record of \
            Tools/lora_grad_records.py (for a full-size model, where a test would be too slow). \
            --part conv times a 3×3 convolution of the VQ decoder's widest full-resolution kind (C → C channels at \
            128×128) as it runs (float32 Winograd), against the products alone of the same convolution as im2col \
            would compute them (M = pixels, K = 9·C, N = C) in float32, int8 and bfloat16: whether reduced-precision \
            convolutions would pay.
            """)

    enum Part: String, ExpressibleByArgument, CaseIterable {
        case transformer
        case vqDecode = "vq-decode"
        case textEncoder = "text-encoder"
        case all
        case trainStep = "train-step"
        case gradients
        case conv
    }

    @Argument(
        help: "A pipeline folder (e.g. .fullsize/amused-256/model) or an .amused bundle (its weights run as stored).")
    var model: String

    @Option(
        help:
            "What to time: transformer, vq-decode, text-encoder, all, train-step, conv, or gradients (with --reference)."
    )
    var part: Part = .all

    @Option(help: "Batch size of the transformer forward (2 = one guided sampling step).")
    var batch = 2

    @Option(help: "Timed runs after the warm-up.")
    var runs = 3

    @Option(help: "With --part gradients: a folder written by Tools/lora_grad_records.py (finetune.safetensors).")
    var reference: String?

    @Flag(help: "Print one JSON document.")
    var json = false

    /// A hub id for the model is resolved in the local Hugging Face cache (revision main) before anything runs.
    mutating func validate() throws {
        guard runs >= 1, batch >= 1 else { throw ValidationError("--runs and --batch must be at least 1") }
        model = try reportingErrors { try HubCache.resolve(model) }
    }

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
                let cond = try transformer.conditioning(
                    encoderHiddenStates: text, pooledTextEmb: pooled,
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
        if part == .conv {
            let components = try load([.vqvae])
            guard let vq = components.vqvae, let c = vq.config.blockOutChannels.first else {
                throw ValidationError("\(model) has no VQ model")
            }
            let side = 128, m = 128 * 128, k = 9 * c
            let image = (0..<(c * m)).map { Float(sin(Double($0) * 0.37)) }
            let weights = (0..<(c * k)).map { Float(cos(Double($0) * 0.11)) / 20 }
            var output = [Float](repeating: 0, count: c * m)
            let winograd = try measure {
                Kernels.conv2d(
                    input: image, channels: c, height: side, width: side, weight: weights, outChannels: c, kernel: 3,
                    stride: 1, padding: .same(1), bias: nil, output: &output)
            }
            let extra = ["channels": c, "pixels": side]
            results.insert("conv3x3_winograd_f32", report(winograd, extra: extra))
            // The products of an im2col convolution alone (gathering the columns not counted): a lower bound.
            let columns = (0..<(m * k)).map { Float(sin(Double($0) * 0.013)) }
            let f32 = try measure {
                Kernels.sgemm(
                    m: m, n: c, k: k, a: columns, lda: k, b: weights, ldb: k, transposeB: true, c: &output, ldc: c)
            }
            results.insert("conv3x3_im2col_products_f32", report(f32, extra: extra))
            if Kernels.int8Compute != .widened {
                var codes = [Int8](repeating: 0, count: c * k), scales = [Float](repeating: 0, count: c)
                for r in 0..<c {
                    scales[r] = weights.withUnsafeBufferPointer { w in
                        codes.withUnsafeMutableBufferPointer {
                            QuantizedTensor.int8Row(w.baseAddress! + r * k, columns: k, into: $0.baseAddress! + r * k)
                        }
                    }
                }
                let int8 = try measure {
                    Kernels.int8Linear(
                        m: m, n: c, k: k, x: columns, weight: codes, scales: scales, bias: nil, y: &output, ldy: c)
                }
                results.insert("conv3x3_im2col_products_int8", report(int8, extra: extra))
            }
            if Kernels.bf16Compute {
                let halves = weights.map(FloatBits.floatToBFloat)
                let bf16 = try measure {
                    Kernels.bf16Linear(m: m, n: c, k: k, x: columns, weight: halves, bias: nil, y: &output, ldy: c)
                }
                results.insert("conv3x3_im2col_products_bf16", report(bf16, extra: extra))
            }
        }
        if part == .trainStep {
            let components = try load([.transformer])
            guard let transformer = components.transformer else { throw ValidationError("\(model) has no transformer") }
            let c = transformer.config
            let grid = c.sampleSize, n = grid * grid
            let tokens = (0..<(batch * n)).map { Int64(($0 * 7919) % c.codebookSize) }
            let size = Float(grid * 16)
            let batchInput = MaskedTokenBatch(
                batch: batch, height: grid, width: grid,
                inputIds: tokens.enumerated().map { $0 % 2 == 0 ? Int64(c.vocabSize - 1) : $1 },
                labels: tokens.enumerated().map { $0 % 2 == 0 ? $1 : -100 },
                encoderHiddenStates: (0..<(batch * 77 * c.encoderHiddenSize)).map { Float(sin(Double($0))) },
                pooledTextEmb: (0..<(batch * c.condEmbedDim)).map { Float(cos(Double($0))) },
                microConds: (0..<batch).flatMap { _ -> [Float] in [size, size, 0, 0, 6] })
            var generator = TorchGenerator(seed: 0)
            var lora = try LoRAAdapters(config: c, rank: 16, alpha: 32, uniform: { generator.nextUniform() })
            var optimizer = AdamW(AdamWSettings(), for: lora)
            let times = try measure {
                let (_, grads) = try transformer.maskedTokenLoss(batchInput, lora: lora)
                optimizer.update(&lora, with: grads!)
            }
            results.insert("train_step", report(times, extra: ["batch": batch, "grid": grid, "rank": 16]))
        }
        if part == .gradients {
            guard let reference else { throw ValidationError("--part gradients needs --reference") }
            let components = try load([.transformer])
            guard let transformer = components.transformer else { throw ValidationError("\(model) has no transformer") }
            let record = try openWeights(path: reference + "/finetune.safetensors")
            let meta = try StrictJSONParser(path: reference + "/finetune.json")
                .parse(try ReadOnlyFile(path: reference + "/finetune.json").readAll())
            guard let rank = meta["lora"]?["r"]?.intValue, let alpha = meta["lora"]?["lora_alpha"]?.doubleValue else {
                throw ValidationError("\(reference)/finetune.json has no lora.r / lora.lora_alpha")
            }
            let c = transformer.config
            func floats(_ name: String) throws -> [Float] { try record.tensor(named: name).floats() }
            var values: [String: (a: [Float], b: [Float])] = [:]
            for t in try LoRAAdapters.targets(c) {
                values[t.module] = (
                    try floats("init/\(t.module).lora_A.weight"), try floats("init/\(t.module).lora_B.weight")
                )
            }
            let lora = try LoRAAdapters(config: c, rank: rank, alpha: Float(alpha), values: values)
            let ids = try record.tensor(named: "step1/input_ids")
            guard ids.shape.count == 3, ids.shape[1] == c.sampleSize, ids.shape[2] == c.sampleSize else {
                throw ValidationError(
                    "\(reference): step1/input_ids is \(ids.shape), not [B, \(c.sampleSize), \(c.sampleSize)]")
            }
            let input = MaskedTokenBatch(
                batch: ids.shape[0], height: ids.shape[1], width: ids.shape[2],
                inputIds: try ids.int64s(), labels: try record.tensor(named: "step1/labels").int64s(),
                encoderHiddenStates: try floats("encoder_hidden_states"),
                pooledTextEmb: try floats("pooled_text_emb"), microConds: try floats("micro_conds"))
            var worst: (Double, String) = (0, ""), errors: [Double] = []
            let times = try measure {
                errors = []
                let (_, grads) = try transformer.maskedTokenLoss(input, lora: lora)
                for (i, adapter) in lora.adapters.enumerated() {
                    for (part, got) in [("lora_A", grads!.a[i]), ("lora_B", grads!.b[i])] {
                        let want = try floats("grad/\(adapter.module).\(part).weight")
                        guard want.count == got.count else {
                            throw ValidationError(
                                "\(reference): grad/\(adapter.module).\(part) has \(want.count) values, not \(got.count)"
                            )
                        }
                        var d = 0.0, n = 0.0
                        for j in want.indices {
                            d += Double(got[j] - want[j]) * Double(got[j] - want[j])
                            n += Double(want[j]) * Double(want[j])
                        }
                        let error = (d / max(n, 1e-30)).squareRoot()
                        errors.append(error)
                        if error > worst.0 { worst = (error, "\(adapter.module).\(part)") }
                    }
                }
            }
            var o = report(times, extra: ["adapters": lora.adapters.count, "rank": rank])
            if case .object(var object) = o {
                object.insert("worst_relative_error", .number(String(format: "%.3e", worst.0)))
                object.insert("worst_tensor", .string(worst.1))
                let sorted = errors.sorted()
                object.insert("median_relative_error", .number(String(format: "%.3e", sorted[sorted.count / 2])))
                object.insert("tensors_above_1e-4", .number(String(errors.filter { $0 > 1e-4 }.count)))
                object.insert("tensors", .number(String(errors.count)))
                o = .object(object)
            }
            results.insert("gradients", o)
        }
        // Measured after the runs, on a core the benchmark has warmed up: what its GFLOP/s are a fraction of.
        let peak = Kernels.measuredFMAPeak()
        // Without VNNI, int8 products are VPMADDWD's: its rate says how much faster than float32 they can be here.
        let int16Peak = Kernels.int8Compute == .avx2 ? Kernels.measuredInt16Peak() : 0
        if json {
            var document = results
            document.insert("products", .string(Kernels.blasDescription))
            document.insert("cpu", .string(Kernels.cpuDescription))
            document.insert("fma_peak_gflops_per_core", .number(String(format: "%.1f", peak)))
            if int16Peak > 0 {
                document.insert("int16_peak_gops_per_core", .number(String(format: "%.1f", int16Peak)))
            }
            emit(JSONValue.object(document).serialized + "\n")
        } else {
            emit("cpu: \(Kernels.cpuDescription)\nproducts: \(Kernels.blasDescription)\n")
            emit(String(format: "peak float32 FMA: %.1f GFLOP/s per core (measured)\n", peak))
            if int16Peak > 0 {
                emit(
                    String(
                        format: "peak int16 multiply-add (the AVX2 int8 path): %.1f GOP/s per core (measured)\n",
                        int16Peak))
            }
            for (name, value) in results.entries {
                emit(
                    "\(name): best \(value["best_seconds"]!.serialized) s, median \(value["median_seconds"]!.serialized) s, "
                        + "peak RSS \(value["peak_rss_mib"]!.serialized) MiB\n")
            }
        }
    }

    /// The components `parts` of the model, from a checkpoint or a bundle (digests checked, pages released after).
    func load(_ parts: Set<AmusedComponents.Part>) throws -> AmusedComponents {
        ModelSource.isBundle(model)
            ? try AmusedComponents(bundle: try AmusedBundle(path: model), only: parts)
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

/// The process's peak resident set size in MiB: VmHWM from /proc/self/status on Linux — not getrusage's ru_maxrss,
/// which Linux carries across exec, so that a command spawned by a large Python process (Tools/bench.py) would report
/// the parent's peak — and ru_maxrss (bytes) on Apple platforms.
func peakRSSMiB() -> Double {
    #if os(Linux)
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kib = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
    {
        return kib / 1024
    }
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
    #else
    var usage = rusage()
    getrusage(RUSAGE_SELF, &usage)
    return Double(usage.ru_maxrss) / 1_048_576
    #endif
}
