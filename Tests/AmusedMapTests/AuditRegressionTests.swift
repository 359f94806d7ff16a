// Inputs that trapped (or wrote past a buffer) before the size audit: configs with sizes the graph divides or
// multiplies by, name maps and sources that break the map's arithmetic, and a LoRA fused into a weight of another
// shape. Each must now be a typed error.

import AmusedBind
import AmusedCore
import AmusedMap
import AmusedModel
import AmusedRead
import AmusedTestSupport
import Testing

@Suite("audit regressions (map, bind)")
struct MapBindAuditRegressionTests {
    func json(_ text: String) throws -> JSONValue { try StrictJSONParser(path: "<test>").parse(Array(text.utf8)) }

    /// Head counts of 0 divided the width (`%` by zero) and negative layer counts made `0..<n` trap when the graph
    /// was built; huge counts built modules without bound.
    @Test(arguments: [
        ("{\"num_attention_heads\": 0}", "num_attention_heads"),
        ("{\"block_num_heads\": 0}", "block_num_heads"),
        ("{\"num_hidden_layers\": -1}", "num_hidden_layers"),
        ("{\"num_hidden_layers\": 1000000000}", "num_hidden_layers"),
        ("{\"micro_cond_encode_dim\": 4611686018427387904}", "micro_cond_encode_dim"),
        ("{\"hidden_size\": -32}", "hidden_size"),
    ])
    func transformerConfigOutOfRange(text: String, key: String) throws {
        let error = try #require(throws: BindError.self) { try UVit2DConfig(json: try json(text), path: "c.json") }
        #expect(error.kind == .config && error.key == key)
    }

    @Test func textEncoderHeadsZeroAndAnyEndOfTextId() throws {
        let error = try #require(throws: BindError.self) {
            try CLIPTextConfig(json: try json("{\"num_attention_heads\": 0}"), path: "c.json")
        }
        #expect(error.key == "num_attention_heads")
        // eos_token_id is only compared with token ids: any integer is kept.
        #expect(try CLIPTextConfig(json: try json("{\"eos_token_id\": -5}"), path: "c.json").eosTokenId == -5)
    }

    @Test func vqConfigOutOfRange() throws {
        for (text, key) in [
            ("{\"layers_per_block\": -2}", "layers_per_block"),
            ("{\"block_out_channels\": [8, -16]}", "block_out_channels"),
            (
                "{\"block_out_channels\": [\(Array(repeating: "8", count: 70).joined(separator: ","))]}",
                "block_out_channels"
            ),
        ] {
            let error = try #require(throws: BindError.self) { try VQModelConfig(json: try json(text), path: "c.json") }
            #expect(error.key == key)
        }
    }

    /// taming's `hidden_channels × channel_mult` was multiplied unchecked in the config reader itself.
    @Test func tamingChannelProductOverflows() throws {
        for text in [
            "{\"hidden_channels\": 128, \"channel_mult\": [4611686018427387904]}",
            "{\"hidden_channels\": 2048, \"channel_mult\": [1, 1024]}",
        ] {
            let error = try #require(throws: BindError.self) {
                try VQModelConfig(taming: try json(text), path: "c.json")
            }
            #expect(error.key == "channel_mult")
        }
    }

    func map(_ rules: String) throws -> NameMap {
        try NameMap(
            json: try json(
                "{\"format\": \"amused-name-map\", \"version\": 1, \"name\": \"t\", "
                    + "\"component\": \"transformer\", \"rules\": [\(rules)]}"), source: "t.json")
    }

    /// `{i-k}` subtracted without a check: a map's `-9223372036854775808` overflowed.
    @Test func templateDifferenceOverflow() throws {
        let source = InMemoryTensors([("a.1", try Tensor(floats: [1], shape: [1]))])
        #expect(throws: MapError.self) {
            try MappedSource(source, map: try map("{\"from\": \"a.{i}\", \"to\": \"b.{i--9223372036854775808}\"}"))
        }
    }

    /// Two source tensors of one name (an HDF5 file's `a.b` and `a/b` both read as `a.b`) trapped building the index.
    @Test func duplicateSourceNames() throws {
        let t = try Tensor(floats: [1], shape: [1])
        let error = try #require(throws: MapError.self) {
            try MappedSource(
                InMemoryTensors([("a.b", t), ("a.b", t)]), map: try map("{\"from\": \"{*}\", \"to\": \"{*}\"}"))
        }
        #expect(error.subject == "a.b")
    }

    /// Concat and split unwrapped the element width of packed F4 tensors (a safetensors file can hold them).
    @Test func packedTensorsAreNotSplitOrConcatenated() throws {
        let f4 = try Tensor(dtype: .f4, shape: [2, 2], storage: Storage(zeroedByteCount: 2))
        let source = InMemoryTensors([("x.a", f4), ("x.b", f4), ("s", f4)])
        let mapped = try MappedSource(
            source,
            map: try map(
                "{\"op\": \"concat\", \"from\": [\"x.a\", \"x.b\"], \"to\": \"y\"}, "
                    + "{\"op\": \"split\", \"from\": \"s\", \"to\": [\"s1\", \"s2\"], \"axis\": 0}"))
        for name in ["y", "s1"] {
            let error = try #require(throws: ReadError.self) { try mapped.tensor(named: name) }
            #expect(error.family == .unsupported && error.field == name)
        }
    }

    /// `fused` ran its GEMM over the weight it was given: one of another shape than B · A was written past its end.
    @Test func loraFusedIntoAWeightOfAnotherShape() throws {
        let lora = try LoRA(
            InMemoryTensors([
                ("transformer.m.lora_A.weight", try Tensor(floats: [1, 2], shape: [1, 2])),
                ("transformer.m.lora_B.weight", try Tensor(floats: [1, 2, 3], shape: [3, 1])),
            ]))
        let pair = try #require(lora.pair("m.weight", component: "transformer"))
        let error = try #require(throws: BindError.self) {
            try lora.fused(try Tensor(floats: [0, 0, 0, 0], shape: [2, 2]), pair, component: "transformer", scale: 1)
        }
        #expect(error.kind == .lora)
        #expect(
            try lora.fused(
                try Tensor(floats: [Float](repeating: 0, count: 6), shape: [3, 2]), pair,
                component: "transformer", scale: 1
            ).floats() == [1, 2, 2, 4, 3, 6])
    }
}
