// Bundles made from the tiny fixtures: their manifests follow the schema, the same input gives the same bytes,
// weights stay views of the mapped file, and the model a bundle holds computes what the reference records say within
// each precision's tolerance profile (the fp16 preset exactly as diffusers' fp16 variant files do).

import AmusedBind
import AmusedCore
import AmusedModel
import AmusedPack
import AmusedQuantize
import AmusedRead
import AmusedTestSupport
import AmusedVerify
import Foundation
import Testing

@Suite("bundles", .serialized)
struct BundleTests {
    @Test(
        "every preset's manifest follows Schemas/bundle-manifest.schema.json",
        arguments: QuantPolicy.presets)
    func manifestFollowsTheSchema(_ preset: String) throws {
        let scratch = try ScratchFolder()
        let path = try makeBundle(preset, in: scratch.path)
        let validator = try SchemaValidator()
        let bundle = try AmusedBundle(path: path)
        #expect(validator.errors(bundle.manifest.json, schema: "bundle-manifest.schema.json") == [])
        #expect(validator.errors(try QuantPolicy.preset(preset).json, schema: "quant-policy.schema.json") == [])
        try bundle.verifyIntegrity()
        // Every tensor of the graph, as the plan said.
        #expect(bundle.components.map(\.name).sorted() == ["text_encoder", "transformer", "vqvae"])
        #expect(bundle.files.keys.sorted() == AmusedBundle.fileNames.sorted())
    }

    @Test func compressedManifestFollowsTheSchemaAndDecompressesToTheSameBytes() throws {
        let scratch = try ScratchFolder()
        let plain = try makeBundle("int8", in: scratch.path)
        let packed = try makeBundle("int8", in: scratch.path, name: "z.amused", compression: 9)
        let bundle = try AmusedBundle(path: packed)
        #expect(bundle.compressed)
        #expect(try SchemaValidator().errors(bundle.manifest.json, schema: "bundle-manifest.schema.json") == [])
        try bundle.verifyIntegrity()
        #expect(try fileBytes(packed).count < fileBytes(plain).count)
        // Byte planes are chosen where they compress better: some float buffers use them.
        #expect(BundleParts.blobObjects(bundle.manifest.json).contains { $0["encoding"]?.stringValue == "zstd-planes" })
        try BundleConversion.transcode(bundle, to: scratch.path + "/back.amused", compression: nil)
        #expect(try fileBytes(scratch.path + "/back.amused") == fileBytes(plain))
    }

    @Test func aCompressedBundleRunsLikeTheUncompressedOne() throws {
        // Decoded into memory on load (bounded by the declared sizes): the same weights, the same logits, bit for bit.
        let scratch = try ScratchFolder()
        let plain = try AmusedComponents(bundle: try AmusedBundle(path: try makeBundle("int4", in: scratch.path)))
        let packed = try AmusedComponents(
            bundle: try AmusedBundle(
                path: try makeBundle("int4", in: scratch.path, name: "z.amused", compression: 5)))
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256"))
        let c = try #require(record.cases.first { $0.kind == "transformer" })
        let ids = try record.tensor(c, "input_ids", rank: 3)
        func logits(_ m: AmusedComponents) throws -> [Float] {
            let t = try #require(m.transformer)
            let cond = try t.conditioning(
                encoderHiddenStates: try record.tensor(c, "encoder_hidden_states", rank: 3).floats(),
                pooledTextEmb: try record.tensor(c, "pooled_text_emb", rank: 2).floats(),
                microConds: try record.tensor(c, "micro_conds", rank: 2).floats(),
                batch: ids.shape[0])
            return try t(try ids.int64s(), height: ids.shape[1], width: ids.shape[2], conditioning: cond)
        }
        #expect(try logits(plain).map(\.bitPattern) == logits(packed).map(\.bitPattern))
    }

    @Test func theSameInputAndOptionsGiveTheSameBytes() throws {
        let scratch = try ScratchFolder()
        let a = try makeBundle("int4", in: scratch.path, name: "a.amused", compression: 3)
        let b = try makeBundle("int4", in: scratch.path, name: "b.amused", compression: 3)
        #expect(try fileBytes(a) == fileBytes(b))
    }

    @Test func uncompressedWeightsAreViewsOfTheMappedFile() throws {
        // No copy of the weights: every buffer of every tensor is a view into the bundle's mapping.
        let scratch = try ScratchFolder()
        let bundle = try AmusedBundle(path: try makeBundle("int8", in: scratch.path))
        for c in bundle.components {
            for t in c.tensors { #expect(try bundle.quantized(t).buffers.allSatisfy(\.isMapped)) }
        }
    }

    @Test func theFp16PresetIsExactlyDiffusersFp16Variant() throws {
        // The fp16 preset rounds every tensor like torch's .half(), which is how the fixture's *.fp16.safetensors
        // were written; the record made from those files must then hold under the float32 profile.
        let scratch = try ScratchFolder()
        let components = try AmusedComponents(bundle: try AmusedBundle(path: try makeBundle("fp16", in: scratch.path)))
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256-fp16"))
        let report = try Verifier(record: record, components: components, profile: try ToleranceProfile.load("fp32"))
            .run()
        #expect(report.pass, "\(report.text)")
        #expect(report.cases.allSatisfy { $0.status == .pass })
    }

    @Test(
        "component cases pass each precision's profile and fail the float32 one",
        arguments: ["fp16", "bf16", "int8", "int4", "mixed"])
    func componentCasesPassTheirProfile(_ preset: String) throws {
        let scratch = try ScratchFolder()
        let components = try AmusedComponents(bundle: try AmusedBundle(path: try makeBundle(preset, in: scratch.path)))
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256"))
        let own = Verifier(record: record, components: components, profile: try ToleranceProfile.load(preset))
        let strict = Verifier(record: record, components: components, profile: try ToleranceProfile.load("fp32"))
        for c in record.cases where ["text_encoder", "transformer", "vq_decode"].contains(c.kind) {
            let result = try own.check(c)
            #expect(result.status == .pass, "\(c.name): \(result.note ?? "")")
        }
        // The quantization is really applied: the transformer's logits move beyond float32 noise.
        let transformer = try #require(record.cases.first { $0.kind == "transformer" })
        #expect(try strict.check(transformer).status == .fail)
    }

    @Test("pipeline metrics against the float32 baseline", arguments: ["int8", "fp16"])
    func quantizedPipelineMetricsAgainstTheFloat32Baseline(_ preset: String) throws {
        // One text-to-image case (batch 2, 8 steps): the bundle teacher-forced against the float32 fixture model.
        let scratch = try ScratchFolder()
        let components = try AmusedComponents(bundle: try AmusedBundle(path: try makeBundle(preset, in: scratch.path)))
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256"))
        let baseline = try AmusedComponents(path: record.modelPath)
        let verifier = Verifier(
            record: record, components: components, baseline: baseline,
            profile: try ToleranceProfile.load(preset))
        let c = try #require(record.cases.first { $0.name == "t2i_b2_nocfg" })
        let result = try verifier.check(c)
        let q = try #require(result.quantization)
        #expect(result.status == .pass, "\(result.note ?? "")")
        #expect(
            q.klMeanPerStep.count == q.top1PerStep.count && q.top1PerStep.count == result.tokenAgreementPerStep?.count)
        // The profile's bounds (checked above through the status) and the ordering of precisions: float16 storage
        // moves the token distributions far less than int8.
        #expect(q.klMean > 0 && q.klMean < (preset == "fp16" ? 1e-3 : 0.2))
        #expect(q.top1 > 0.85 && q.top1 <= 1)
        // The float32 model against itself: zero divergence, identical tokens and images.
        let same = Verifier(
            record: record, components: baseline, baseline: baseline,
            profile: try ToleranceProfile.load("int8"))
        let identical = try #require(try same.check(c).quantization)
        #expect(identical.klMean == 0 && identical.top1 == 1 && identical.finalTokenAgreement == 1)
        #expect(identical.psnr == .infinity)
    }

    @Test func damagedScalesFailTheInt8Profile() throws {
        // A bundle that is intact (digests recomputed) but whose int8 scales are reversed row order: the int8
        // profile must catch it, or the profile would not catch a broken quantizer.
        let scratch = try ScratchFolder()
        let good = try makeBundle("int8", in: scratch.path)
        var parts = try BundleParts(good)
        let objects = BundleParts.blobObjects(.object(parts.manifest))
        var swapped = 0
        for (i, o) in objects.enumerated() where o["role"]?.stringValue == "scales" && o["dtype"]?.stringValue == "F32"
        {
            let n = parts.blobs[i].count / 4
            guard n > 1 else { continue }
            var rows = (0..<n).map { Array(parts.blobs[i][($0 * 4)..<($0 * 4 + 4)]) }
            rows.reverse()
            parts.blobs[i] = Array(rows.joined())
            swapped += 1
        }
        #expect(swapped > 10)
        let bad = scratch.path + "/bad.amused"
        let digests = parts.blobs.map { blob in
            blob.withUnsafeBytes { raw in
                SHA256Hex.of(raw)
            }
        }
        try parts.write(to: bad) { m in
            var k = 0
            func fix(_ j: JSONValue) -> JSONValue {
                var o = j.objectValue!
                o.set("sha256", .string(digests[k]))
                k += 1
                return .object(o)
            }
            var components: [JSONValue] = []
            for c in m["components"]!.arrayValue! {
                var co = c.objectValue!
                co.set(
                    "tensors",
                    .array(
                        c["tensors"]!.arrayValue!.map { t in
                            var to = t.objectValue!
                            to.set("buffers", .array(t["buffers"]!.arrayValue!.map(fix)))
                            return .object(to)
                        }))
                components.append(.object(co))
            }
            m.set("components", .array(components))
            m.set("files", .array(m["files"]!.arrayValue!.map(fix)))
        }
        let components = try AmusedComponents(bundle: try AmusedBundle(path: bad))
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256"))
        let verifier = Verifier(record: record, components: components, profile: try ToleranceProfile.load("int8"))
        let transformer = try #require(record.cases.first { $0.kind == "transformer" })
        #expect(try verifier.check(transformer).status == .fail)
    }

    @Test func aLoRABakedIntoABundleMatchesDiffusersWithTheLoRALoaded() throws {
        // Baked at scale 0.5 into a float32 bundle: the record diffusers made with the LoRA loaded at 0.5 holds under
        // the float32 profile (component cases), and the manifest names the file, its digest and the scale.
        let scratch = try ScratchFolder()
        var options = ConversionOptions(policy: try QuantPolicy.preset("fp32"))
        let loraPath = FixturePaths.path("lora/tiny-256/pytorch_lora_weights.safetensors")
        options.lora = LoRAFusion(try LoRA(path: loraPath), scale: 0.5)
        let path = scratch.path + "/lora.amused"
        try BundleConversion.convert(
            try Checkpoint(path: FixturePaths.path("records/tiny-256/model")), to: path,
            options: options)
        let bundle = try AmusedBundle(path: path)
        #expect(try SchemaValidator().errors(bundle.manifest.json, schema: "bundle-manifest.schema.json") == [])
        #expect(bundle.manifest.lora?.file == "pytorch_lora_weights.safetensors")
        #expect(bundle.manifest.lora?.scale == 0.5)
        let record = try ReferenceRecord(path: FixturePaths.path("lora/tiny-256/scale-0.5"))
        let verifier = Verifier(
            record: record, components: try AmusedComponents(bundle: bundle),
            profile: try ToleranceProfile.load("fp32"))
        let components = record.cases.filter { ["text_encoder", "transformer"].contains($0.kind) }
        #expect(!components.isEmpty)
        for c in components { #expect(try verifier.check(c).status == .pass, "\(c.name)") }
    }

    @Test func aFloat32BundleOfALinearScheduleCheckpointRunsItsPipelinesSeedForSeed() throws {
        // tiny-variant's scheduler config says "linear"; the bundle's manifest carries it, and every pipeline case of
        // the record diffusers made with that schedule passes from the bundle (identical tokens at every step).
        let scratch = try ScratchFolder()
        let path = scratch.path + "/variant.amused"
        try BundleConversion.convert(
            try Checkpoint(path: FixturePaths.path("records/tiny-variant/model")), to: path,
            options: ConversionOptions(policy: try QuantPolicy.preset("fp32")))
        let components = try AmusedComponents(bundle: try AmusedBundle(path: path))
        #expect(components.maskingSchedule == .linear)
        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-variant"))
        let verifier = Verifier(record: record, components: components, profile: try ToleranceProfile.load("fp32"))
        let pipelines = record.cases.filter { ["text_to_image", "image_to_image"].contains($0.kind) }
        #expect(pipelines.count == 7)
        for c in pipelines {
            let result = try verifier.check(c)
            #expect(result.status == .pass && result.firstDivergingStep == nil, "\(c.name): \(result.note ?? "")")
        }
    }

    @Test func anErrorFoundLateLeavesTheDestinationAsItWas() throws {
        // OUT-01: a NaN in one of the last tensors is found only when its values are quantized, after nearly every
        // buffer was written. The old bundle stays, byte for byte, and no temporary file is left.
        let scratch = try ScratchFolder()
        let model = scratch.path + "/model"
        try FileManager.default.copyItem(atPath: FixturePaths.path("records/tiny-256/model"), toPath: model)
        let (_, plan) = try BundleConversion.plan(
            try Checkpoint(path: model),
            options: ConversionOptions(policy: try QuantPolicy.preset("int8")))
        let victim = try #require(plan.tensors.last { $0.scheme == .int8 })
        let index = try #require(
            plan.tensors.firstIndex { $0.spec.key == victim.spec.key && $0.component == victim.component })
        #expect(index > plan.tensors.count * 3 / 4)
        // Poke a NaN into the first value of that tensor in its safetensors file.
        let file =
            model + "/" + victim.component + "/"
            + (victim.component == "text_encoder"
                ? "model.safetensors"
                : "diffusion_pytorch_model.safetensors")
        var bytes = try fileBytes(file)
        let headerLength = Int(bytes[0..<8].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try StrictJSONParser(path: file).parse(bytes[8..<(8 + headerLength)])
        let begin = try #require(header[victim.spec.key]?["data_offsets"]?.arrayValue?.first?.intValue)
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) {
            bytes.replaceSubrange((8 + headerLength + begin)..<(8 + headerLength + begin + 4), with: $0)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: file))

        let out = scratch.path + "/out.amused"
        try Data("old bundle".utf8).write(to: URL(fileURLWithPath: out))
        #expect(throws: BundleError.self) {
            try BundleConversion.convert(
                try Checkpoint(path: model), to: out,
                options: ConversionOptions(policy: try QuantPolicy.preset("int8")))
        }
        do {
            try BundleConversion.convert(
                try Checkpoint(path: model), to: out,
                options: ConversionOptions(policy: try QuantPolicy.preset("int8")))
        } catch let e as BundleError {
            #expect(e.field == "\(victim.component)/\(victim.spec.key)")
            #expect(e.message.contains("nan"))
        }
        #expect(try fileBytes(out) == Array("old bundle".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasSuffix(".tmp") } == [])
    }

    @Test func aPolicyMustMatchEveryTensor() throws {
        let json = try StrictJSONParser(path: "p").parse(
            Array(
                """
                {"format": "amused-quant-policy", "version": 1, "name": "partial",
                 "rules": [{"use": ["linear"], "scheme": "int8", "reason": "linears only"}]}
                """.utf8))
        let policy = try QuantPolicy(json: json, path: "partial.json")
        let checkpoint = try Checkpoint(path: FixturePaths.path("records/tiny-256/model"))
        #expect(throws: QuantizeError.self) {
            try BundleConversion.plan(checkpoint, options: ConversionOptions(policy: policy))
        }
        do {
            _ = try BundleConversion.plan(checkpoint, options: ConversionOptions(policy: policy))
        } catch let e as QuantizeError {
            #expect(e.field?.contains("/") == true)  // names component/tensor
            #expect(e.message.contains("no rule"))
        }
    }

    @Test func policiesAreValidatedFieldByField() throws {
        func load(_ text: String) throws -> QuantPolicy {
            try QuantPolicy(json: try StrictJSONParser(path: "p").parse(Array(text.utf8)), path: "p.json")
        }
        let head = #"{"format": "amused-quant-policy", "version": 1, "name": "x", "rules": ["#
        for (rule, field) in [
            (#"{"scheme": "int3", "reason": "r"}"#, "rules[0].scheme"),
            (#"{"scheme": "int8"}"#, "rules[0].reason"),
            (#"{"scheme": "int8", "reason": "r", "colour": 1}"#, "rules[0].colour"),
            (#"{"use": ["bias"], "scheme": "int8", "reason": "r"}"#, "rules[0].use"),
        ] {
            #expect(throws: QuantizeError.self) { _ = try load(head + rule + "]}") }
            do { _ = try load(head + rule + "]}") } catch let e as QuantizeError { #expect(e.field == field) }
        }
    }

    @Test func int4FallsBackWhereGroupsDoNotFitAndSaysWhy() throws {
        // Groups of 64 do not divide the tiny model's 32-wide rows: the plan takes the rule's int8 fallback.
        let checkpoint = try Checkpoint(path: FixturePaths.path("records/tiny-256/model"))
        let (_, plan) = try BundleConversion.plan(
            checkpoint, options: ConversionOptions(policy: try QuantPolicy.preset("int4")))
        let fallen = plan.tensors.filter { $0.reason.contains("int4g64 → int8") }
        #expect(!fallen.isEmpty)
        #expect(fallen.allSatisfy { $0.scheme == .int8 && $0.spec.use == .linear })
        #expect(plan.tensors.filter { $0.spec.use == .other }.allSatisfy { $0.scheme == .f32 })
        #expect(plan.summary.contains("total: \(plan.tensors.count) tensors"))
    }
}
