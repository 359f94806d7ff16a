// `amused generate`: text-to-image, image-to-image and inpainting with a checkpoint, seed for seed with diffusers.

import AmusedBind
import AmusedCore
import AmusedImage
import AmusedModel
import AmusedRead
import ArgumentParser
import Foundation

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate images with an aMUSEd checkpoint (text-to-image, image-to-image, inpainting).",
        discussion: """
            With --init-image the image is re-generated (image-to-image, --strength 0.5 by default); with \
            --init-image and --mask, the white parts of the mask are repainted (inpainting, --strength 1.0). \
            Images whose sides are not multiples of 16 are resized down to the nearest multiple with Lanczos, \
            like diffusers. The same --seed gives the same tokens as diffusers' pipeline with \
            torch.Generator("cpu").manual_seed(seed); --fast-rng trades that for a faster sampler.
            """)

    @Option(
        help:
            "The model: a diffusers pipeline folder (or open-muse folder, single file with --configs) or an .amused bundle."
    )
    var model: String

    @Option(name: .long, parsing: .singleValue, help: "A prompt (repeat for a batch).")
    var prompt: [String]

    @Option(name: .long, parsing: .singleValue, help: "A negative prompt per prompt (default \"\").")
    var negativePrompt: [String] = []

    @Option(help: "Seed of the generator.")
    var seed: UInt64 = 0

    @Option(help: "Sampling steps (default: what the model recommends, else 12).")
    var steps: Int?

    @Option(help: "Classifier-free guidance scale, off at 1 or below (default: what the model recommends, else 10).")
    var guidance: Float?

    @Option(help: "Image side in pixels, for a square image (default: the transformer's sample_size × the VQ scale).")
    var size: Int?

    @Option(help: "Image width in pixels (overrides --size for the width; a multiple of the VQ scale).")
    var width: Int?

    @Option(help: "Image height in pixels (overrides --size for the height; a multiple of the VQ scale).")
    var height: Int?

    @Option(help: "Images per prompt.")
    var imagesPerPrompt = 1

    @Option(help: "An init image (PNG or JPEG) for image-to-image or inpainting.")
    var initImage: String?

    @Option(help: "How much of the schedule to run on the init image (0–1).")
    var strength: Double?

    @Option(help: "Inpainting mask (PNG or JPEG, white = repaint); needs --init-image.")
    var mask: String?

    @Option(help: "Micro-conditioning aesthetic score.")
    var aestheticScore: Float = 6

    @Flag(help: "A faster, non-reproducing sampler (no seed-for-seed parity with PyTorch).")
    var fastRng = false

    @Option(help: "Output PNG path; with several images, -0, -1, … are added before .png.")
    var out: String

    @OptionGroup var loraOptions: LoRAOptions

    @OptionGroup var layoutOptions: LayoutOptions

    @Option(help: "Read *.{variant}.safetensors files (e.g. fp16), widened to float32.")
    var variant: String?

    mutating func validate() throws {
        // A hub id for the model is resolved in the local Hugging Face cache before anything runs.
        model = try layoutOptions.resolve(model)
        if mask != nil && initImage == nil { throw ValidationError("--mask needs --init-image") }
        if initImage != nil && (size != nil || width != nil || height != nil) {
            throw ValidationError("the init image sets the size; leave out --size, --width and --height")
        }
        if let s = strength, !(0...1).contains(s) { throw ValidationError("--strength must be between 0 and 1") }
        if !negativePrompt.isEmpty && negativePrompt.count != prompt.count {
            throw ValidationError("give one --negative-prompt per --prompt (or none)")
        }
        if (steps ?? 1) < 1 || imagesPerPrompt < 1 {
            throw ValidationError("--steps and --images-per-prompt must be positive")
        }
    }

    func run() throws { try reportingErrors(generate) }

    func generate() throws {
        let start = Date()
        let components = try ModelSource.components(model, variant: variant, lora: loraOptions, layout: layoutOptions)
        let pipeline = try AmusedPipeline(components: components)
        let f = pipeline.vqvae.config.scaleFactor
        let side = size ?? pipeline.transformer.config.sampleSize * f
        var request = GenerationRequest(prompts: prompt, height: height ?? side, width: width ?? side)
        request.negativePrompts = negativePrompt.isEmpty ? nil : negativePrompt
        request.seed = seed
        // Flags first, then the model's own recommendation (model_index.json _amused_defaults), then diffusers'.
        request.steps = steps ?? components.samplingDefaults?.steps ?? request.steps
        request.guidanceScale = guidance ?? components.samplingDefaults?.guidance ?? request.guidanceScale
        request.imagesPerPrompt = imagesPerPrompt
        request.aestheticScore = aestheticScore
        request.reproducible = !fastRng
        request.strength = strength
        if let initImage {
            var image = try decodeImage(try readBytes(initImage), path: initImage)
            // diffusers floors each side to a multiple of the VQ scale and resizes with Lanczos when it changed.
            let w = image.width - image.width % f, h = image.height - image.height % f
            guard w > 0, h > 0 else { throw ImageError(path: initImage, "image is smaller than \(f)×\(f)") }
            image = image.resized(width: w, height: h)
            request.width = w
            request.height = h
            request.initImages = Array((0..<prompt.count).map { _ in image.pixels }.joined())
            if let mask {
                // The mask goes straight to the token grid: grayscale, Lanczos, ≥ 128 repaints. diffusers' mask
                // processor floors the grid to a multiple of the scale factor too (docs/model-notes.md §9.15), which
                // fails unless the grid already is one; refuse the same sizes with a clear message.
                let gw = w / f, gh = h / f
                guard gw % f == 0, gh % f == 0 else {
                    throw ImageError(
                        path: mask,
                        "the token grid \(gw)×\(gh) is not a multiple of \(f), which "
                            + "diffusers' inpainting cannot handle either; use an image whose sides are multiples of \(f * f)"
                    )
                }
                let m = try decodeImage(try readBytes(mask), path: mask, grayscale: true).resized(width: gw, height: gh)
                request.mask = Array((0..<prompt.count).map { _ in m.pixels }.joined())
            }
        }
        let result = try pipeline.generate(request, progress: ProgressBar(unit: "step").update)
        var written: [String] = []
        let perImage = result.height * result.width * 3
        for b in 0..<result.batch {
            let path =
                result.batch == 1
                ? out
                : (out.hasSuffix(".png") ? String(out.dropLast(4)) : out) + "-\(b).png"
            let image = Image8(
                width: result.width, height: result.height, channels: 3,
                pixels: Array(result.images[(b * perImage)..<((b + 1) * perImage)]))
            let writer = try AtomicFileWriter(destination: path)
            try writer.write(PNG.encode(image))
            try writer.commit()
            written.append(path)
        }
        let stepMean =
            result.stepSeconds.isEmpty ? 0 : result.stepSeconds.reduce(0, +) / Double(result.stepSeconds.count)
        FileHandle.standardError.write(
            Data(
                String(
                    format: "generated %d image(s) %d×%d in %.1f s: %d steps at %.2f s/step, text+VQ %.1f s → %@\n",
                    result.batch, result.width, result.height, Date().timeIntervalSince(start),
                    result.stepSeconds.count,
                    stepMean, result.otherSeconds, written.joined(separator: ", ")
                ).utf8))
    }

    func readBytes(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImageError(path: path, "cannot read the file")
        }
        guard data.count <= 256 << 20 else { throw ImageError(path: path, "file is larger than 256 MiB") }
        return [UInt8](data)
    }
}
