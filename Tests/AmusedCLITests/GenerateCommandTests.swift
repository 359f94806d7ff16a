// `amused generate` end to end on the tiny fixture model: the PNG it writes holds the pixels diffusers produced
// for the same prompt and seed (record tiny-256, case t2i_b1_cfg, and inpainting from PNG inputs).

import AmusedImage
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("amused generate", .serialized)
struct GenerateCommandTests {
    func recordPixels(_ record: String, _ name: String) throws -> [UInt8] {
        let file = try SafetensorsFile(path: FixturePaths.path("records/\(record)/record.safetensors"))
        return try file.tensor(named: name).int64s().map { UInt8($0) }
    }

    func maxDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
        zip(a, b).map { abs(Int($0) - Int($1)) }.max() ?? 0
    }

    @Test func textToImageMatchesDiffusers() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/cat.png"
        let result = try runAmused([
            "generate", "--model", FixturePaths.path("records/tiny-256/model"),
            "--prompt", "a photo of a cat", "--seed", "0", "--out", out,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("s/step"))
        let image = try PNG.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: out))))
        #expect(image.width == 32 && image.height == 32)
        // Same tokens at every step (checked in the parity tests); pixels within one uint8 level.
        #expect(maxDifference(image.pixels, try recordPixels("tiny-256", "t2i_b1_cfg/image")) <= 1)
    }

    /// A bare `amused generate` on the trained default (no --steps, --guidance or --seed) uses the settings the model
    /// recommends in model_index.json and draws what diffusers drew at them (record shapes-64, case t2i_b1_defaults,
    /// made by Tools/record.py from those same settings); an fp32 bundle carries the settings in its manifest.
    @Test func bareGenerateUsesTheSettingsTheModelRecommends() throws {
        let scratch = try ScratchFolder()
        let record = try FixturePaths.json("records/shapes-64/record.json")
        let c = try #require(record["cases"]?.arrayValue?.first { $0["name"]?.stringValue == "t2i_b1_defaults" })
        let prompt = try #require(c["prompts"]?.arrayValue?.first?.stringValue)
        // The record was made at the model's settings, and they are not diffusers' defaults (12 steps, guidance 10),
        // so a generate that ignored them would draw something else.
        let defaults = try #require(try FixturePaths.json("models/shapes-64/model_index.json")["_amused_defaults"])
        #expect(c["guidance_scale"]?.doubleValue == defaults["guidance"]?.doubleValue)
        #expect(c["steps"]?.intValue == defaults["steps"]?.intValue ?? 12)
        #expect(defaults["guidance"]?.doubleValue != 10)
        let expected = try recordPixels("shapes-64", "t2i_b1_defaults/image")
        let model = FixturePaths.path("models/shapes-64")
        let out = scratch.path + "/bare.png"
        let result = try runAmused(["generate", "--model", model, "--prompt", prompt, "--out", out])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("\(c["steps"]?.intValue ?? 0) steps"), "\(result.stderr)")
        let image = try PNG.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: out))))
        #expect(maxDifference(image.pixels, expected) <= 1)

        let bundle = scratch.path + "/shapes.amused"
        let converted = try runAmused(["convert", model, "--out", bundle, "--quantize", "fp32"])
        #expect(converted.status == 0, "\(converted.stderr)")
        let fromBundle = try runAmused([
            "generate", "--model", bundle, "--prompt", prompt, "--out", scratch.path + "/b.png",
        ])
        #expect(fromBundle.status == 0, "\(fromBundle.stderr)")
        let b = try PNG.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: scratch.path + "/b.png"))))
        #expect(maxDifference(b.pixels, expected) <= 1)
    }

    /// `--width`/`--height` give a non-square image (record case t2i_b1_wide: twice as wide as high).
    @Test func aWideImageMatchesDiffusers() throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/wide.png"
        let result = try runAmused([
            "generate", "--model", FixturePaths.path("records/tiny-512/model"),
            "--prompt", "a photo of a cat", "--seed", "8", "--width", "128", "--height", "64",
            "--out", out,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let image = try PNG.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: out))))
        #expect(image.width == 128 && image.height == 64)
        #expect(maxDifference(image.pixels, try recordPixels("tiny-512", "t2i_b1_wide/image")) <= 1)
        let both = try runAmused([
            "generate", "--model", FixturePaths.path("records/tiny-512/model"), "--prompt", "x",
            "--init-image", out, "--width", "64", "--out", scratch.path + "/no.png",
        ])
        #expect(both.status != 0 && both.stderr.contains("the init image sets the size"), "\(both.stderr)")
    }

    @Test func inpaintingFromPNGFilesMatchesDiffusers() throws {
        let scratch = try ScratchFolder()
        let file = try SafetensorsFile(path: FixturePaths.path("records/tiny-512/record.safetensors"))
        let initImage = try file.tensor(named: "inpaint_b1_cfg/init_image")
        let mask = try file.tensor(named: "inpaint_b1_cfg/mask")
        try scratch.write(
            "init.png",
            PNG.encode(
                Image8(
                    width: initImage.shape[2], height: initImage.shape[1], channels: 3,
                    pixels: try initImage.int64s().map { UInt8($0) })))
        try scratch.write(
            "mask.png",
            PNG.encode(
                Image8(
                    width: mask.shape[2], height: mask.shape[1], channels: 1,
                    pixels: try mask.int64s().map { UInt8($0) })))
        let out = scratch.path + "/out.png"
        let result = try runAmused([
            "generate", "--model", FixturePaths.path("records/tiny-512/model"),
            "--prompt", "a photo of a cat", "--seed", "6", "--init-image",
            scratch.path + "/init.png", "--mask", scratch.path + "/mask.png", "--out", out,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let image = try PNG.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: out))))
        #expect(maxDifference(image.pixels, try recordPixels("tiny-512", "inpaint_b1_cfg/image")) <= 1)
    }

    @Test func maskWithoutInitImageIsAUsageError() throws {
        let result = try runAmused([
            "generate", "--model", FixturePaths.path("records/tiny-256/model"), "--prompt", "x",
            "--mask", "m.png", "--out", "/tmp/never.png",
        ])
        #expect(result.status == 64)
        #expect(!FileManager.default.fileExists(atPath: "/tmp/never.png"))
    }
}
