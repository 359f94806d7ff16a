#!/usr/bin/env python3
"""Writes every committed fixture under Fixtures/ from the pinned PyTorch reference, byte-identically on every run.

    Tools/.venv/bin/python Tools/make_fixtures.py

- Fixtures/records/tiny-256, tiny-512: tiny aMUSEd pipelines with random weights in the released layout
  (save_pretrained) plus reference records covering every case kind (docs/reference-record.md).
- Fixtures/safetensors/dtypes.safetensors (+ dtypes.json): one tensor of every dtype Python's safetensors writes,
  with the values torch reads back, for the reader's conformance tests.
- Fixtures/tokenizer/prompts.json: prompts and the ids transformers' CLIPTokenizer gives them.
- Fixtures/MANIFEST.json: file, size, sha256, generator command, library versions, seed.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amused_reference import (  # noqa: E402
    REPO, VERSIONS, RecordWriter, build_pipeline, clip_tokenizer, encode_prompts, save_pipeline, sha256,
    tiny_text_config, tiny_transformer_config, tiny_vq_config,
)
from diffusers import AmusedImg2ImgPipeline, AmusedInpaintPipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

SEED = 20240101
FIXTURES = REPO / "Fixtures"
COMMAND = "Tools/.venv/bin/python Tools/make_fixtures.py"

TEXT_PROMPTS = [
    "a photo of a cat", "", "A painting of a squirrel eating a burger", "dog",
    "winter mountains, HDR, 8k!!!", "Ünïcödé café — naïve façade 🍕🐱", "   many    spaces   here   ",
    "the quick brown fox jumps over the lazy dog " * 8,
]

# Transformer logits are scaled up (mlm conv2 gain) so the token distributions are peaked enough for sampling to be
# a real test; the VQ decoder's conv_out is biased towards 0.5 so pixels land inside [0, 1] instead of clipping.
TRANSFORMER_GAINS = {"mlm_layer.conv2": 4.0}
VQ_GAINS = {"decoder.conv_out.weight": 0.25, "decoder.conv_out.bias": 0.5}


def smooth_images(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Deterministic smooth RGB images (uint8, B×H×W×3) with some structure for the VQ encoder to see."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.zeros((batch, height, width, 3), dtype=np.uint8)
    for b in range(batch):
        img = np.zeros((height, width, 3))
        for c in range(3):
            fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            img[..., c] = 0.5 + 0.45 * np.sin(2 * np.pi * (fx * x / width + fy * y / height) + ph)
        out[b] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return out


def run_pipeline_case(rec, kind: str, pipeline, case: str, tensors_in=None, **kw) -> None:
    """Runs one diffusers pipeline case and records the tokens after every step and the final PIL pixels."""
    steps: list[torch.Tensor] = []
    keys = {k: v for k, v in kw.items() if k not in ("image", "mask_image")}
    generator = torch.Generator().manual_seed(kw["seed"])
    args = dict(prompt=kw["prompts"], negative_prompt=kw["negative_prompts"], generator=generator,
                num_inference_steps=kw["steps"], guidance_scale=kw["guidance_scale"],
                temperature=tuple(kw["temperature"]), micro_conditioning_aesthetic_score=kw["aesthetic_score"],
                micro_conditioning_crop_coord=tuple(kw["crop_coord"]), output_type="pil",
                callback=lambda i, t, latents: steps.append(latents.clone()), callback_steps=1)
    if kind == "text_to_image":
        args.update(height=kw["height"], width=kw["width"])
    else:
        args.update(image=kw["image"], strength=kw["strength"])
    if kind == "inpaint":
        args["mask_image"] = kw["mask_image"]
    with torch.no_grad():
        images = pipeline(**args).images
    pixels = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
    rec.add(case, kind, {**(tensors_in or {}), "tokens": torch.stack(steps), "image": pixels}, **keys)


def record_pipeline(name: str, pipe, folder: Path, seed: int, *, pipelines: bool = True, model: str = "model",
                    only: set[str] | None = None, prompts: list[str] | None = None,
                    t2i_extra: list[tuple[str, dict]] | None = None) -> None:
    """Records every case kind of `pipe` (the cases in `only`, when given; `prompts` for the text encoder's many-prompt
    case instead of TEXT_PROMPTS; `t2i_extra` text-to-image cases besides the standard ones, as (name, settings))
    into `folder`. Tools/record.py runs it on any checkpoint."""
    rec = RecordWriter(folder, model=model, only=only)
    transformer, vqvae = pipe.transformer, pipe.vqvae
    grid = transformer.config.sample_size
    scale = 2 ** (len(vqvae.config.block_out_channels) - 1)
    size = grid * scale
    mask_id = pipe.scheduler.config.mask_token_id
    codebook = vqvae.config.num_vq_embeddings
    gen = torch.Generator().manual_seed(seed)

    with torch.no_grad():
        # Text encoder: many prompts at once, and the batch-1 and batch-2 shapes.
        for case, texts in (("text_many", prompts or TEXT_PROMPTS), ("text_b1", ["a photo of a cat"]),
                            ("text_b2", ["", "An astronaut riding a horse, 4k"])):
            ids, hidden, embeds = encode_prompts(pipe, texts)
            rec.add(case, "text_encoder", {"input_ids": ids, "hidden_states_penultimate": hidden,
                                           "text_embeds": embeds}, prompts=texts)

        # Transformer: ids with masked positions, real text features, micro-conditioning.
        for b in (1, 2):
            ids = torch.randint(0, codebook, (b, grid, grid), generator=gen)
            ids[torch.rand((b, grid, grid), generator=gen) < 0.5] = mask_id
            prompts = ["a photo of a cat", "winter mountains"][:b]
            _, hidden, embeds = encode_prompts(pipe, prompts)
            micro = torch.tensor([[size, size, 0, 0, 6.0], [size + 16, size - 16, 8, 4, 5.5]][:b])
            logits = transformer(ids, micro_conds=micro, pooled_text_emb=embeds, encoder_hidden_states=hidden)
            rec.add(f"transformer_b{b}", "transformer", {"input_ids": ids, "encoder_hidden_states": hidden,
                                                        "pooled_text_emb": embeds, "micro_conds": micro,
                                                        "logits": logits})

        # VQ decode and encode.
        for b in (1, 2):
            ids = torch.randint(0, codebook, (b, grid, grid), generator=gen)
            image = vqvae.decode(ids, force_not_quantize=True,
                                 shape=(b, grid, grid, vqvae.config.latent_channels)).sample.clip(0, 1)
            rec.add(f"vq_decode_b{b}", "vq_decode", {"ids": ids, "image": image})
        for b in (1, 2):
            pixels = torch.from_numpy(smooth_images(b, size, size, seed + b)).permute(0, 3, 1, 2).float() / 255
            latents = vqvae.encode(pixels).latents
            ids = vqvae.quantize(latents)[2][2].reshape(b, grid, grid)
            rec.add(f"vq_encode_b{b}", "vq_encode", {"image": pixels, "ids": ids})

    if not pipelines:
        rec.write()
        return

    def run(kind, pipeline, case, tensors_in=None, **kw):
        # Each pipeline case draws from its own seeded generator, so one left out changes no other.
        if only is None or case in only:
            run_pipeline_case(rec, kind, pipeline, case, tensors_in, **kw)

    common = dict(temperature=[2.0, 0.0], height=size, width=size, aesthetic_score=6.0, crop_coord=[0, 0])
    run("text_to_image", pipe, "t2i_b1_cfg", prompts=["a photo of a cat"], negative_prompts=None, seed=0,
        steps=12, guidance_scale=10.0, **common)
    run("text_to_image", pipe, "t2i_b2_nocfg", prompts=["dog", "a red car"], negative_prompts=None, seed=1,
        steps=8, guidance_scale=1.0, **common)
    run("text_to_image", pipe, "t2i_b2_cfg_neg", prompts=["winter mountains", "a bowl of fruit"],
        negative_prompts=["blurry", "low quality, watermark"], seed=2, steps=12, guidance_scale=4.0,
        temperature=[3.0, 0.5], height=size, width=size, aesthetic_score=5.5, crop_coord=[8, 4])
    # Not square: twice as wide as high (micro-conditioning carries width then height).
    run("text_to_image", pipe, "t2i_b1_wide", prompts=["a photo of a cat"], negative_prompts=None, seed=8, steps=12,
        guidance_scale=10.0, temperature=[2.0, 0.0], height=size, width=2 * size, aesthetic_score=6.0,
        crop_coord=[0, 0])
    for case, settings in t2i_extra or []:
        run("text_to_image", pipe, case, negative_prompts=None, **{**common, **settings})

    img2img = AmusedImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    for case, b, strength, guidance, s in (("i2i_b1_s03", 1, 0.3, 10.0, 3), ("i2i_b2_s07", 2, 0.7, 10.0, 4),
                                           ("i2i_b1_s10_nocfg", 1, 1.0, 1.0, 5)):
        init = smooth_images(b, size, size, seed + 10 + s)
        run("image_to_image", img2img, case, {"init_image": torch.from_numpy(init)},
            prompts=["a photo of a cat", "dog"][:b], negative_prompts=None, seed=s, steps=12,
            guidance_scale=guidance, strength=strength, image=[Image.fromarray(i) for i in init], **common)

    schedule = pipe.scheduler.config.masking_schedule
    inpaint = AmusedInpaintPipeline(**pipe.components)  # note: switches the shared scheduler to "linear"
    inpaint.set_progress_bar_config(disable=True)
    for case, b, guidance, s in (("inpaint_b1_cfg", 1, 10.0, 6), ("inpaint_b2_nocfg", 2, 1.0, 7)):
        init = smooth_images(b, size, size, seed + 20 + s)
        mask = np.zeros((b, grid, grid), dtype=np.uint8)
        mask[:, grid // 4 : 3 * grid // 4, grid // 4 :] = 255
        if b == 2:
            mask[1, :, : grid // 2] = 255
        run("inpaint", inpaint, case, {"init_image": torch.from_numpy(init), "mask": torch.from_numpy(mask)},
            prompts=["a photo of a cat", "dog"][:b], negative_prompts=None, seed=s, steps=12,
            guidance_scale=guidance, strength=1.0, image=[Image.fromarray(i) for i in init],
            mask_image=[Image.fromarray(m, mode="L") for m in mask], **common)
    pipe.scheduler.register_to_config(masking_schedule=schedule)
    rec.write()


def write_dtype_fixture(folder: Path) -> None:
    """One tensor per dtype, with edge values, and what torch reads back (exact values as float64 or int)."""
    folder.mkdir(parents=True, exist_ok=True)
    floats = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.140625, 65504.0, 1e-8, 6.1e-5, 1e30, float("inf"),
                           float("-inf"), 1.0 / 3.0], dtype=torch.float64)
    tensors = {
        "f64": floats.clone(),
        "f32": floats.to(torch.float32),
        "f16": floats.to(torch.float16),
        "bf16": floats.to(torch.bfloat16),
        "f8_e4m3": torch.tensor([0.0, 1.0, -2.5, 448.0, 0.001953125, -0.1], dtype=torch.float32).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.tensor([0.0, 1.0, -2.5, 57344.0, 1.52587890625e-05, -0.1], dtype=torch.float32).to(torch.float8_e5m2),
        "i64": torch.tensor([0, -1, 2**62, -(2**63), 2**63 - 1], dtype=torch.int64),
        "i32": torch.tensor([0, -1, 2**31 - 1, -(2**31)], dtype=torch.int32),
        "i16": torch.tensor([0, -1, 32767, -32768], dtype=torch.int16),
        "i8": torch.tensor([0, -1, 127, -128], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),
        "u32": torch.tensor([0, 1, 2**32 - 1], dtype=torch.uint32),
        "u64": torch.tensor([0, 1, 2**63 - 1], dtype=torch.uint64),
        "bool": torch.tensor([True, False, True]),
        "f32_matrix": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 7,
        "scalar": torch.tensor(1.5, dtype=torch.float32),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
    }
    save_file(tensors, str(folder / "dtypes.safetensors"), metadata={"format": "pt"})  # one key: Rust writes metadata in HashMap order
    from safetensors.torch import load_file

    back = load_file(str(folder / "dtypes.safetensors"))
    expected = {}
    for name, t in back.items():
        if t.dtype.is_floating_point:
            values = [float(v) for v in t.to(torch.float64).flatten().tolist()]
            values = ["inf" if v == float("inf") else "-inf" if v == float("-inf") else v for v in values]
        elif t.dtype == torch.bool:
            values = [int(v) for v in t.flatten().tolist()]
        else:
            values = [str(int(v)) for v in t.flatten().tolist()]  # strings keep 64-bit integers exact
        expected[name] = {"dtype": str(t.dtype), "shape": list(t.shape), "values": values}
    (folder / "dtypes.json").write_text(json.dumps(expected, indent=1) + "\n")


def tokenizer_prompts() -> list[str]:
    """At least 300 prompts: unicode, emoji, accents, punctuation runs, numbers, spaces, case, overlong, empty."""
    rng = random.Random(SEED)
    base = [
        "", " ", "a photo of a cat", "A PHOTO OF A CAT", "a  photo   of\ta\ncat", "dog", "Dogs!!!", "it's", "I'M",
        "don't stop", "we'll've", "hello...world", "?!?!?!", "----", "*** bold ***", "e-mail@example.com",
        "https://huggingface.co/amused/amused-256", "3.14159", "1,000,000 dollars", "year 2024", "4k 8K 16k",
        "100%", "#hashtag @mention", "C++ & C#", "naïve café", "Ünïcödé", "façade", "crème brûlée", "smörgåsbord",
        "Straße", "İstanbul", "ǅemal", "東京タワー", "北京", "서울", "Ελληνικά", "Русский текст", "עברית", "العربية",
        "हिन्दी", "ไทย", "🍕", "🐱‍👤", "👩‍👩‍👧‍👦", "🏳️‍🌈", "a 🐱 in a 🎩", "emoji🙂without🙂spaces", "♥♦♣♠",
        "fi ﬁ ligature", "ｆｕｌｌｗｉｄｔｈ", "zero\u200bwidth", "tab\tseparated", "line\nbreaks\r\nhere",
        "mojibake: Ã©tÃ©", "&amp; &lt;tag&gt;", "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b",
        "trailing space ", " leading space", "MiXeD CaSe WoRdS", "camelCaseWords", "snake_case_words",
        "under_score__double", "....", "!!!", "'''", '"quoted"', "(parens) [brackets] {braces}", "a/b\\c",
        "½ ¼ ¾", "x² y³", "™ © ®", "€100 £50 ¥1000", "°C", "µm", "Ω", "ß", "ﬀ", "Ⅻ", "①②③",
        "the quick brown fox jumps over the lazy dog " * 10,
        "word " * 100, "a" * 300, "🍕" * 100, ", " * 80, "supercalifragilisticexpialidocious " * 5,
    ]
    words = ["cat", "dog", "photo", "painting", "of", "a", "the", "astronaut", "horse", "riding", "mountains",
             "winter", "HDR", "8k", "cinematic", "lighting", "portrait", "Van", "Gogh", "style", "café", "naïve",
             "🐱", "🍕", "!!!", "...", "2024", "3.5", "x", "Über", "東京", "high-quality", "ultra-detailed",
             "trending", "on", "artstation", "(masterpiece)", "[best]", "{quality}", "don't", "it's", "RED", "Blue"]
    seps = [" ", "  ", ", ", ",", " - ", "\t", "   ", "_", "/"]
    while len(base) < 330:
        n = rng.randint(1, 40)
        text = ""
        for i in range(n):
            text += rng.choice(words) + (rng.choice(seps) if i < n - 1 else "")
        if rng.random() < 0.2:
            text = text.upper()
        base.append(text)
    return base


def write_tokenizer_fixture(folder: Path, tok) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prompts = tokenizer_prompts()
    cases = []
    for p in prompts:
        ids = tok(p, padding="max_length", truncation=True, max_length=77).input_ids
        cases.append({"prompt": p, "input_ids": ids})
    (folder / "prompts.json").write_text(json.dumps({"tokenizer": "CLIPTokenizer (slow, ftfy installed)",
                                                     "cases": cases}, ensure_ascii=False, indent=0) + "\n",
                                         encoding="utf-8")


def write_key_lists(folder: Path) -> None:
    """The parameter names and shapes diffusers/transformers instantiate for a set of configs (on the meta
    device), so that the graph's own parameter lists can be checked against them without any weights."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_fullsize import released_text_config, released_transformer_config, released_vq_config
    from diffusers import UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection

    def uvit(**kw):
        return ("UVit2DModel", {**tiny_transformer_config(resolution_512=False), **kw})

    configs = [
        ("amused-256-transformer", ("UVit2DModel", released_transformer_config(256))),
        ("amused-512-transformer", ("UVit2DModel", released_transformer_config(512))),
        ("amused-vqvae", ("VQModel", released_vq_config())),
        ("amused-text-encoder", ("CLIPTextModelWithProjection", released_text_config().to_dict())),
        ("uvit-bias-affine", uvit(use_bias=True)),
        ("uvit-bias-no-affine-512", uvit(use_bias=True, ln_elementwise_affine=False, downsample=True, upsample=True)),
        ("uvit-no-affine", uvit(ln_elementwise_affine=False)),
        ("uvit-hidden-equals-block", uvit(hidden_size=24, num_attention_heads=3)),
        ("vq-mid-attention", ("VQModel", {**tiny_vq_config(), "mid_block_add_attention": True})),
        ("vq-defaults", ("VQModel", {})),
    ]
    out = []
    for name, (cls, cfg) in configs:
        with torch.device("meta"):
            if cls == "UVit2DModel":
                model = UVit2DModel(**cfg)
            elif cls == "VQModel":
                model = VQModel(**cfg)
            else:
                model = CLIPTextModelWithProjection(tiny_text_config().__class__(**cfg))
        keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        cfg = {k: v for k, v in (model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)).items()
               if not k.startswith("_") and k not in ("transformers_version", "architectures")}
        out.append({"name": name, "class": cls, "config": cfg, "keys": keys})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "parameter-lists.json").write_text(json.dumps({"generator": COMMAND, "configs": out}, indent=0) + "\n")


def write_image_fixtures(folder: Path) -> None:
    """PNG files in the colour types and bit depths PIL writes, and what PIL reads back; Lanczos resizes of an RGB
    and a grayscale image to several sizes as PIL computes them (the pipelines' preprocessing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    base = smooth_images(1, 37, 29, SEED)[0]  # odd sizes: resizing and row filters get exercised
    base[5:9, 3:20] = rng.integers(0, 256, (4, 17, 3), dtype=np.uint8)  # some noise for the filters
    variants = {
        "rgb": Image.fromarray(base, "RGB"),
        "rgba": Image.fromarray(np.dstack([base, rng.integers(0, 256, base.shape[:2], dtype=np.uint8)]), "RGBA"),
        "gray": Image.fromarray(base[..., 0], "L"),
        "palette": Image.fromarray(base, "RGB").quantize(colors=37),
        "gray16": Image.fromarray((base[..., 1].astype(np.uint16) * 257 + 3), "I;16"),
    }
    tensors = {}
    for name, im in variants.items():
        path = folder / f"{name}.png"
        im.save(path, optimize=(name == "rgb"), compress_level=9)
        back = Image.open(path)
        tensors[f"{name}/rgb"] = torch.from_numpy(np.asarray(back.convert("RGB"), dtype=np.uint8).copy())
    # JPEGs as cameras and PIL write them (4:2:0 chroma subsampling, and 4:4:4), decoded by PIL.
    for name, subsampling, quality in (("photo420", 2, 85), ("photo444", 0, 95)):
        path = folder / f"{name}.jpg"
        Image.fromarray(base, "RGB").save(path, quality=quality, subsampling=subsampling)
        tensors[f"{name}/rgb"] = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy())
    Image.fromarray(base[..., 0], "L").save(folder / "gray.jpg", quality=90)
    tensors["grayjpg/rgb"] = torch.from_numpy(np.asarray(Image.open(folder / "gray.jpg").convert("RGB")).copy())
    src = Image.open(folder / "rgb.png").convert("RGB")
    gray = Image.open(folder / "gray.png")
    for (w, h) in ((16, 32), (29, 16), (64, 80), (8, 8), (29, 37)):
        tensors[f"lanczos/rgb_{w}x{h}"] = torch.from_numpy(np.asarray(src.resize((w, h), Image.LANCZOS)).copy())
        tensors[f"lanczos/gray_{w}x{h}"] = torch.from_numpy(np.asarray(gray.resize((w, h), Image.LANCZOS)).copy())
    tensors["convert_l/from_rgb"] = torch.from_numpy(np.asarray(src.convert("L")).copy())
    save_file(tensors, str(folder / "expected.safetensors"))


def _datasets(f):
    import h5py

    out = []
    f.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Dataset) else None)
    return out


def write_format_fixtures(folder: Path) -> None:
    """Weights written by the real Python writers — torch.save (zip + pickle), numpy.savez / savez_compressed,
    gguf-py — and the values those libraries read back, for the readers' conformance tests."""
    import gguf

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    expected: dict[str, torch.Tensor] = {}

    # PyTorch: a module's state_dict (OrderedDict + _metadata BUILD), shared storages, transposed and sliced views,
    # every float and integer dtype, a scalar and an empty tensor.
    lin = torch.nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 3, generator=g))
        lin.bias.copy_(torch.randn(4, generator=g))
    sd = lin.state_dict()
    base = torch.randn(6, 5, generator=g)
    sd["shared.a"] = base
    sd["shared.b"] = base  # the same storage twice
    sd["view.transposed"] = base.t()  # strides (1, 5)
    sd["view.slice"] = base[2:5, 1:4]  # offset 11, strides (5, 1)
    sd["view.row"] = base[3]  # offset 15
    for name, dt in (("f16", torch.float16), ("bf16", torch.bfloat16), ("f64", torch.float64)):
        sd[f"dtype.{name}"] = torch.randn(2, 3, generator=g).to(dt)
    sd["dtype.i64"] = torch.tensor([0, -1, 2**40, -(2**63), 2**63 - 1])
    sd["dtype.i32"] = torch.tensor([0, -1, 2**31 - 1], dtype=torch.int32)
    sd["dtype.i16"] = torch.tensor([0, -1, 32767], dtype=torch.int16)
    sd["dtype.i8"] = torch.tensor([0, -1, 127, -128], dtype=torch.int8)
    sd["dtype.u8"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["dtype.bool"] = torch.tensor([True, False])
    # Saved as untyped storages rebuilt by _rebuild_tensor_v3 with a dtype object.
    sd["dtype.u16"] = torch.tensor([0, 1, 65535], dtype=torch.uint16)
    sd["dtype.u32"] = torch.tensor([0, 2**32 - 1], dtype=torch.uint32)
    sd["dtype.u64"] = torch.tensor([0, 2**63 - 1], dtype=torch.uint64)
    sd["dtype.f8_e4m3"] = torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    torch.save(sd, folder / "state_dict.pt")
    back = torch.load(folder / "state_dict.pt", weights_only=True)
    for k, v in back.items():
        expected[f"torch/{k}"] = v.contiguous().clone()
    # The pre-1.6 format is a bare pickle stream (torch's own legacy writer embeds object ids, so it is not
    # reproducible; its first bytes are these).
    import pickle
    (folder / "legacy.pt").write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))

    # NumPy .npz, stored and deflated: Fortran order, big-endian, 0-d, bool, ints.
    arrays = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 3,
        "f64": np.linspace(-1, 1, 5),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "big_endian": np.arange(4, dtype=">f4") * 1.5,
        "i64": np.array([-(2**62), 7], dtype=np.int64),
        "u8": np.array([[1, 2], [3, 255]], dtype=np.uint8),
        "flag": np.array([True, False, True]),
        "zero_d": np.array(3.25, dtype=np.float32),
    }
    np.savez(folder / "stored.npz", **arrays)
    np.savez_compressed(folder / "compressed.npz", **arrays)
    for k, v in np.load(folder / "stored.npz").items():
        expected[f"npz/{k}"] = torch.from_numpy(v.astype(v.dtype.newbyteorder("="), order="C"))  # keeps 0-d

    # GGUF v3 by gguf-py: F32, F16, Q8_0, Q4_0 tensors, metadata of several types, custom alignment.
    writer = gguf.GGUFWriter(str(folder / "model.gguf"), "amused-test")
    writer.add_uint32("test.count", 7)
    writer.add_float32("test.scale", 0.5)
    writer.add_string("test.name", "tiny")
    writer.add_array("test.ids", [3, 1, 4, 1, 5])
    writer.add_bool("test.flag", True)
    writer.add_custom_alignment(64)
    values = {
        "f32": torch.randn(4, 8, generator=g).numpy(),
        "f16": torch.randn(3, 32, generator=g).numpy().astype(np.float16),
        "q8": torch.randn(2, 64, generator=g).numpy(),
        "q4": torch.randn(2, 64, generator=g).numpy(),
        "q4_1": torch.randn(2, 64, generator=g).numpy(),
        "q5_0": torch.randn(2, 64, generator=g).numpy(),
        "q5_1": torch.randn(2, 64, generator=g).numpy(),
    }
    writer.add_tensor("f32", values["f32"])
    writer.add_tensor("f16", values["f16"])
    writer.add_tensor("q8", gguf.quants.quantize(values["q8"], gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q4", gguf.quants.quantize(values["q4"], gguf.GGMLQuantizationType.Q4_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    for name, qtype in (("q4_1", gguf.GGMLQuantizationType.Q4_1), ("q5_0", gguf.GGMLQuantizationType.Q5_0),
                        ("q5_1", gguf.GGMLQuantizationType.Q5_1)):
        writer.add_tensor(name, gguf.quants.quantize(values[name], qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # GGUF v2 differs from v3 only in its version field for little-endian files.
    v3 = (folder / "model.gguf").read_bytes()
    (folder / "model_v2.gguf").write_bytes(v3[:4] + (2).to_bytes(4, "little") + v3[8:])
    reader = gguf.GGUFReader(str(folder / "model.gguf"))
    for t in reader.tensors:
        shape = list(reversed([int(d) for d in t.shape]))  # GGUF lists dims fastest first
        deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        expected[f"gguf/{t.name}"] = torch.from_numpy(deq.copy())
    expected["gguf_source/q8"] = torch.from_numpy(values["q8"].copy())  # before gguf-py quantized it

    # HDF5 by h5py, as Keras-style weight files are laid out: nested groups, contiguous and chunked + gzip + shuffle
    # datasets, float32/float64/int32/bool and a big-endian float.
    import h5py

    # libhdf5 stamps object headers with the time even with track_times off for the root group, so the file is
    # written to a scratch path and kept only if its contents differ from the committed one (regeneration then
    # reproduces the committed bytes).
    target = folder / "weights.h5"
    committed = REPO / "Fixtures" / "formats" / "weights.h5.keep"
    with h5py.File(target, "w", libver="earliest", track_order=True) as f:
        f.attrs["backend"] = "tensorflow"
        layer = f.create_group("model_weights").create_group("dense")
        still = dict(track_times=False)  # no timestamps: regenerating gives the same bytes
        layer.create_dataset("kernel:0", data=torch.randn(3, 4, generator=g).numpy(), **still)
        layer.create_dataset("bias:0", data=torch.randn(4, generator=g).numpy(), chunks=(2,), compression="gzip",
                             shuffle=True, **still)
        f.create_dataset("stats/f64", data=np.linspace(0, 1, 7), **still)
        f.create_dataset("stats/i32", data=np.array([[1, -2], [3, 2**31 - 1]], dtype=np.int32), **still)
        f.create_dataset("stats/flag", data=np.array([True, False, True]), **still)
        f.create_dataset("stats/big_endian", data=np.arange(5, dtype=">f4") / 4, **still)
    if committed.exists():
        with h5py.File(target, "r") as new, h5py.File(committed, "r") as old:
            same = []
            new.visititems(lambda n, o: same.append(isinstance(o, h5py.Dataset) and n in old
                                                    and np.array_equal(o[()], old[n][()]) and o.dtype == old[n].dtype
                                                    and o.chunks == old[n].chunks and o.compression == old[n].compression)
                           if isinstance(o, h5py.Dataset) else None)
            keep = all(same) and len(same) == sum(1 for _ in _datasets(old))
        if keep:
            shutil.copyfile(committed, target)
    with h5py.File(folder / "weights.h5", "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                expected["h5/" + name.replace("/", ".")] = torch.from_numpy(
                    np.ascontiguousarray(v.astype(v.dtype.newbyteorder("="))))
        f.visititems(visit)
    save_file(expected, str(folder / "expected.safetensors"))
    return
    save_file(expected, str(folder / "expected.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# open-muse naming: the inverse of diffusers' scripts/convert_amused.py, checked by running that script's renaming
# (ported below with its loop counts taken from the config) on the result.

def to_open_muse_transformer(sd: dict, config: dict) -> dict:
    """diffusers UVit2DModel state dict → open-muse MaskGiTUViT_v2 names."""
    out = {}
    for k, v in sd.items():
        n = k
        for a, b in (("cond_embed.linear_1.", "cond_embed.0."), ("cond_embed.linear_2.", "cond_embed.2."),
                     ("mlm_layer.layer_norm.", "mlm_layer.layer_norm.norm."),
                     ("down_block.downsample.norm.", "down_blocks.0.downsample.0.norm."),
                     ("down_block.downsample.conv.", "down_blocks.0.downsample.1."),
                     ("up_block.upsample.norm.", "up_blocks.0.upsample.0.norm."),
                     ("up_block.upsample.conv.", "up_blocks.0.upsample.1.")):
            if n.startswith(a):
                n = b + n[len(a):]
        if n.startswith("transformer_layers."):
            parts = n.split(".")
            head, rest = ".".join(parts[:2]), ".".join(parts[2:])
            for a, b in (("norm1.norm.", "attn_layer_norm."), ("norm1.linear.", "self_attn_adaLN_modulation.mapper."),
                         ("attn1.to_q.", "attention.query."), ("attn1.to_k.", "attention.key."),
                         ("attn1.to_v.", "attention.value."), ("attn1.to_out.0.", "attention.out."),
                         ("norm2.norm.", "crossattn_layer_norm."), ("norm2.linear.", "cross_attn_adaLN_modulation.mapper."),
                         ("attn2.to_q.", "crossattention.query."), ("attn2.to_k.", "crossattention.key."),
                         ("attn2.to_v.", "crossattention.value."), ("attn2.to_out.0.", "crossattention.out."),
                         ("norm3.norm.", "ffn.pre_mlp_layer_norm."), ("norm3.linear.", "ffn.adaLN_modulation.mapper."),
                         ("ff.net.2.", "ffn.wo.")):
                if rest.startswith(a):
                    rest = b + rest[len(a):]
            if rest.startswith("ff.net.0.proj."):
                half = v.shape[0] // 2  # first half: wi_1 (linear branch); second: wi_0 (gated)
                out[f"{head}.ffn.wi_1.{rest.split('.')[-1]}"] = v[:half].clone()
                out[f"{head}.ffn.wi_0.{rest.split('.')[-1]}"] = v[half:].clone()
                continue
            n = f"{head}.{rest}"
        for side in ("down", "up"):
            if n.startswith(f"{side}_block."):
                rest = n[len(f"{side}_block."):]
                for a, b in ((".norm.", ".norm.norm."), (".channelwise_linear_1.", ".channelwise.0."),
                             (".channelwise_norm.", ".channelwise.2."), (".channelwise_linear_2.", ".channelwise.4."),
                             (".cond_embeds_mapper.", ".adaLN_modulation.mapper.")):
                    if rest.startswith("res_blocks.") and a in rest:
                        rest = rest.replace(a, b, 1)
                if rest.startswith("attention_blocks."):
                    for a, b in ((".norm1.", ".attn_layer_norm."), (".norm2.", ".crossattn_layer_norm."),
                                 (".attn1.to_q.", ".attention.query."), (".attn1.to_k.", ".attention.key."),
                                 (".attn1.to_v.", ".attention.value."), (".attn1.to_out.0.", ".attention.out."),
                                 (".attn2.to_q.", ".crossattention.query."), (".attn2.to_k.", ".crossattention.key."),
                                 (".attn2.to_v.", ".crossattention.value."), (".attn2.to_out.0.", ".crossattention.out.")):
                        if a in rest:
                            rest = rest.replace(a, b, 1)
                n = f"{side}_blocks.0.{rest}"
        out[n] = v.clone()
    return out


def convert_amused_transformer(state_dict: dict, layers: int, res_blocks: int, down_up: bool) -> dict:
    """diffusers' scripts/convert_amused.py make_transformer renaming, with its loop counts parameterised."""
    sd = dict(state_dict)
    sd["cond_embed.linear_1.weight"] = sd.pop("cond_embed.0.weight")
    sd["cond_embed.linear_2.weight"] = sd.pop("cond_embed.2.weight")
    for i in range(layers):
        p = f"transformer_layers.{i}."
        for new, old in (("norm1.norm", "attn_layer_norm"), ("norm1.linear", "self_attn_adaLN_modulation.mapper"),
                         ("attn1.to_q", "attention.query"), ("attn1.to_k", "attention.key"),
                         ("attn1.to_v", "attention.value"), ("attn1.to_out.0", "attention.out"),
                         ("norm2.norm", "crossattn_layer_norm"), ("norm2.linear", "cross_attn_adaLN_modulation.mapper"),
                         ("attn2.to_q", "crossattention.query"), ("attn2.to_k", "crossattention.key"),
                         ("attn2.to_v", "crossattention.value"), ("attn2.to_out.0", "crossattention.out"),
                         ("norm3.norm", "ffn.pre_mlp_layer_norm"), ("norm3.linear", "ffn.adaLN_modulation.mapper")):
            sd[p + new + ".weight"] = sd.pop(p + old + ".weight")
        wi_0, wi_1 = sd.pop(p + "ffn.wi_0.weight"), sd.pop(p + "ffn.wi_1.weight")
        sd[p + "ff.net.0.proj.weight"] = torch.concat([wi_1, wi_0], dim=0)
        sd[p + "ff.net.2.weight"] = sd.pop(p + "ffn.wo.weight")
    if down_up:
        sd["down_block.downsample.norm.weight"] = sd.pop("down_blocks.0.downsample.0.norm.weight")
        sd["down_block.downsample.conv.weight"] = sd.pop("down_blocks.0.downsample.1.weight")
        sd["up_block.upsample.norm.weight"] = sd.pop("up_blocks.0.upsample.0.norm.weight")
        sd["up_block.upsample.conv.weight"] = sd.pop("up_blocks.0.upsample.1.weight")
    sd["mlm_layer.layer_norm.weight"] = sd.pop("mlm_layer.layer_norm.norm.weight")
    for side in ("down", "up"):
        for i in range(res_blocks):
            o, n = f"{side}_blocks.0.res_blocks.{i}.", f"{side}_block.res_blocks.{i}."
            for new, old in (("norm.weight", "norm.norm.weight"), ("channelwise_linear_1.weight", "channelwise.0.weight"),
                             ("channelwise_norm.gamma", "channelwise.2.gamma"), ("channelwise_norm.beta", "channelwise.2.beta"),
                             ("channelwise_linear_2.weight", "channelwise.4.weight"),
                             ("cond_embeds_mapper.weight", "adaLN_modulation.mapper.weight")):
                sd[n + new] = sd.pop(o + old)
            o, n = f"{side}_blocks.0.attention_blocks.{i}.", f"{side}_block.attention_blocks.{i}."
            for new, old in (("norm1", "attn_layer_norm"), ("attn1.to_q", "attention.query"), ("attn1.to_k", "attention.key"),
                             ("attn1.to_v", "attention.value"), ("attn1.to_out.0", "attention.out"),
                             ("norm2", "crossattn_layer_norm"), ("attn2.to_q", "crossattention.query"),
                             ("attn2.to_k", "crossattention.key"), ("attn2.to_v", "crossattention.value"),
                             ("attn2.to_out.0", "crossattention.out")):
                sd[n + new + ".weight"] = sd.pop(o + old + ".weight")
    for key in list(sd.keys()):
        for side in ("up", "down"):
            if key.startswith(f"{side}_blocks.0"):
                sd[f"{side}_block." + ".".join(key.split(".")[2:])] = sd.pop(key)
    return sd


def to_taming_vq(sd: dict, levels: int) -> dict:
    """diffusers VQModel state dict → taming VQGANModel names (decoder block index reversed)."""
    out = {}
    for k, v in sd.items():
        n = k
        for part in ("encoder", "decoder"):
            n = n.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.").replace(
                f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.").replace(f"{part}.conv_norm_out.", f"{part}.norm_out.")
        if n.startswith("encoder.down_blocks."):
            k_ = n.split(".")[2]
            n = f"encoder.down.{k_}." + ".".join(n.split(".")[3:])
        if n.startswith("decoder.up_blocks."):
            k_ = int(n.split(".")[2])
            n = f"decoder.up.{levels - 1 - k_}." + ".".join(n.split(".")[3:])
        n = n.replace(".resnets.", ".block.").replace(".conv_shortcut.", ".nin_shortcut.").replace(
            ".downsamplers.0.conv.", ".downsample.conv.").replace(".upsamplers.0.conv.", ".upsample.conv.")
        out[n] = v.clone()
    return out


def write_open_muse_fixture(folder: Path, pipe, tok) -> None:
    """The tiny-512 pipeline as open-muse's save_pretrained lays it out: transformer/ and vae/ (open-muse configs,
    pytorch_model.bin) and text_encoder/ (CLIP without the text_model. prefix, with position_ids, tokenizer files)."""
    t_config = dict(pipe.transformer.config)
    sd = {k: v.detach().clone() for k, v in pipe.transformer.state_dict().items()}
    old = to_open_muse_transformer(sd, t_config)
    back = convert_amused_transformer(old, t_config["num_hidden_layers"], t_config["num_res_blocks"], t_config["downsample"])
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd), "inverse map disagrees with convert_amused"
    (folder / "transformer").mkdir(parents=True, exist_ok=True)
    torch.save(old, folder / "transformer" / "pytorch_model.bin")
    keys = ("hidden_size", "use_bias", "hidden_dropout", "cond_embed_dim", "micro_cond_encode_dim", "micro_cond_embed_dim",
            "encoder_hidden_size", "vocab_size", "codebook_size", "in_channels", "num_res_blocks", "block_num_heads",
            "num_hidden_layers", "num_attention_heads", "attention_dropout", "intermediate_size", "layer_norm_eps",
            "ln_elementwise_affine")
    om = {"_class_name": "MaskGiTUViT_v2", "_version": "0.0.1", **{k: t_config[k] for k in keys},
          "block_out_channels": [t_config["block_out_channels"]], "force_down_up_sample": t_config["downsample"],
          "mask_token_id": t_config["vocab_size"] - 1, "norm_type": "rmsnorm", "use_encoder_layernorm": True}
    (folder / "transformer" / "config.json").write_text(json.dumps(om, indent=2, sort_keys=True) + "\n")
    v_config = dict(pipe.vqvae.config)
    levels = len(v_config["block_out_channels"])
    vsd = {k: v.detach().clone() for k, v in pipe.vqvae.state_dict().items()}
    (folder / "vae").mkdir(parents=True, exist_ok=True)
    torch.save(to_taming_vq(vsd, levels), folder / "vae" / "pytorch_model.bin")
    base = v_config["block_out_channels"][0]
    vq = {"_class_name": "VQGANModel", "_version": "0.0.1", "resolution": 256, "num_channels": 3,
          "hidden_channels": base, "channel_mult": [c // base for c in v_config["block_out_channels"]],
          "num_res_blocks": v_config["layers_per_block"], "attn_resolutions": [], "z_channels": v_config["latent_channels"],
          "num_embeddings": v_config["num_vq_embeddings"], "quantized_embed_dim": v_config["latent_channels"],
          "dropout": 0.0, "resample_with_conv": True, "commitment_cost": 0.25,
          "no_attn_mid_block": not v_config["mid_block_add_attention"],
          "norm_num_groups": v_config["norm_num_groups"]}  # not in open-muse (which hard-codes 32): the tiny model needs 4
    (folder / "vae" / "config.json").write_text(json.dumps(vq, indent=2, sort_keys=True) + "\n")
    te = folder / "text_encoder"
    te.mkdir(parents=True, exist_ok=True)
    tsd = {k[len("text_model."):] if k.startswith("text_model.") else k: v.detach().clone()
           for k, v in pipe.text_encoder.state_dict().items()}
    tsd["embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    torch.save(tsd, te / "pytorch_model.bin")
    pipe.text_encoder.config.to_json_file(str(te / "config.json"))
    tok.save_pretrained(str(te))
    extra = te / "added_tokens.json"
    if extra.exists():
        extra.unlink()


def write_fp16_record(folder: Path, model: Path, seed: int) -> None:
    """Records of the model as diffusers loads its fp16 variant files (`variant="fp16"`, computed in float32):
    what a checkpoint read with --variant fp16 must reproduce, and what the fp32 files must not."""
    from diffusers import AmusedPipeline
    pipe = AmusedPipeline.from_pretrained(str(model), variant="fp16", torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert all(p.dtype == torch.float32 for p in pipe.transformer.parameters())
    record_pipeline("fp16", pipe, folder, seed, model="../tiny-256/model",
                    only={"text_b2", "transformer_b1", "transformer_b2", "vq_decode_b1", "vq_encode_b1"}, pipelines=False)
    print(f"wrote {folder}")


LORA_CASES = {"text_b2", "transformer_b1", "transformer_b2", "t2i_b1_cfg"}


def write_lora_fixture(folder: Path, model: Path, seed: int) -> None:
    """A tiny PEFT LoRA on tiny-256 (transformer to_q/to_k/to_v, text encoder q/k/v_proj) saved the way
    train_amused.py saves one, and records of diffusers with it loaded at scales 1.0 and 0.5 (model notes §6.1)."""
    from diffusers import AmusedPipeline
    from diffusers.loaders import AmusedLoraLoaderMixin
    from diffusers.utils.peft_utils import scale_lora_layers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    pipe = AmusedPipeline.from_pretrained(str(model))
    torch.manual_seed(seed)
    # init_lora_weights=False draws B as well as A, so the LoRA changes the outputs from the start (PEFT's default
    # B = 0 would be a no-op). lora_alpha is deliberately not r: alpha is not saved, and the records show what a
    # reload does with that.
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v"],
                                            init_lora_weights=False))
    pipe.text_encoder.add_adapter(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj"],
                                             init_lora_weights=False))
    # What examples/amused/train_amused.py does (AmusedPipeline itself no longer carries the LoRA mixin).
    AmusedLoraLoaderMixin.save_lora_weights(
        str(folder), transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder))
    del pipe
    for scale in (1.0, 0.5):
        ref = AmusedPipeline.from_pretrained(str(model))
        ref.set_progress_bar_config(disable=True)
        # train_amused.py's load hook: no alphas in the file, so PEFT takes lora_alpha = r (scaling 1.0), times
        # the scale asked for.
        state, alphas = AmusedLoraLoaderMixin.lora_state_dict(str(folder))
        AmusedLoraLoaderMixin.load_lora_into_transformer(state, network_alphas=alphas, transformer=ref.transformer)
        AmusedLoraLoaderMixin.load_lora_into_text_encoder(state, network_alphas=alphas, text_encoder=ref.text_encoder,
                                                          prefix="text_encoder")
        # 2 layers + 2 blocks x 2 res x (attn1, attn2) x 3, and 2 CLIP layers x 3.
        for part, targets in ((ref.transformer, 36), (ref.text_encoder, 6)):
            layers = [m for m in part.modules() if hasattr(m, "lora_A") and m.lora_A]
            assert len(layers) == targets and all(m.scaling["default_0"] == 1.0 for m in layers), len(layers)
            scale_lora_layers(part, scale)
        record_pipeline("lora", ref, folder / f"scale-{scale}", seed, model="../../../records/tiny-256/model",
                        only=LORA_CASES)
        print(f"wrote {folder}/scale-{scale}")


def write_quant_fixture(folder: Path) -> None:
    """Quantization references for the Swift quantizer: int8 codes from torch.quantize_per_channel (qint8, axis 0,
    the scales AmusedKit defines: max|row| / 127 in float32), float16 and bfloat16 from torch's .half()/.bfloat16(),
    and int4 affine groups computed with numpy in float32 by the documented formula (no library has this exact
    scheme). Inputs include round-half ties, an all-zero row, a negative-only row, and float16 overflow/underflow."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED + 20)
    linear = (rng.standard_normal((24, 64)) * 0.05).astype(np.float32)
    linear[3] = 0
    linear[5] = -np.abs(linear[5])
    linear[7, :8] = [127, 0.5, 1.5, -2.5, 2.5, -0.5, 63.5, -126.5]  # scale 1: ties to even
    linear[7, 8:] = 0
    linear[9, 10] = 3.0  # an outlier widening one row's scale
    tensors = {
        "linear": linear,
        "conv": (rng.standard_normal((8, 4, 3, 3)) * 0.2).astype(np.float32),
        "embedding": rng.standard_normal((10, 32)).astype(np.float32),
        "halfrange": np.array([[70000.0, -65520.0, 65504.0, 1e-8, -3e-8, 3e-6, 6.1e-5, 1.0]], dtype=np.float32),
    }
    out: dict[str, np.ndarray] = {}
    for name, w in tensors.items():
        out[name] = w
        t = torch.from_numpy(w)
        out[name + ".f16"] = t.half().numpy()
        out[name + ".bf16"] = t.bfloat16().view(torch.int16).numpy().view(np.uint16)
        rows = w.reshape(w.shape[0], -1)
        if name == "halfrange":
            continue
        peak = np.abs(rows).max(axis=1).astype(np.float32)
        scales = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
        q = torch.quantize_per_channel(torch.from_numpy(rows), torch.from_numpy(scales.astype(np.float64)),
                                       torch.zeros(rows.shape[0], dtype=torch.int64), 0, torch.qint8)
        out[name + ".int8"] = q.int_repr().numpy()
        out[name + ".int8_scales"] = scales
        out[name + ".int8_dequant"] = (q.int_repr().numpy().astype(np.float32) * scales[:, None]).astype(np.float32)
        if rows.shape[1] % 32 == 0:
            g = rows.reshape(rows.shape[0], -1, 32)
            lo, hi = g.min(axis=2), g.max(axis=2)
            m = lo.astype(np.float16)
            s = ((hi - lo) / np.float32(15)).astype(np.float32).astype(np.float16)
            sf, mf = s.astype(np.float32), m.astype(np.float32)
            inv = np.where(sf > 0, np.float32(1) / np.where(sf > 0, sf, 1), np.float32(0)).astype(np.float32)
            codes = np.clip(np.rint((g - mf[..., None]) * inv[..., None]), 0, 15).astype(np.uint8).reshape(rows.shape)
            out[name + ".int4g32"] = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
            out[name + ".int4g32_scales"] = s
            out[name + ".int4g32_minimums"] = m
            dq = codes.reshape(g.shape).astype(np.float32) * sf[..., None] + mf[..., None]
            out[name + ".int4g32_dequant"] = dq.reshape(rows.shape).astype(np.float32)
    from safetensors.numpy import save_file as save_numpy
    save_numpy({k: np.ascontiguousarray(v) for k, v in sorted(out.items())}, str(folder / "reference.safetensors"))


def write_manifest() -> None:
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    # Folders other generators write (Fixtures/dtypes by Tools/make_dtype_fixtures.py) keep their provenance.
    previous = FIXTURES / "MANIFEST.json"
    also = json.loads(previous.read_text()).get("also", {}) if previous.exists() else {}
    manifest = {
        "generator": COMMAND,
        "versions": VERSIONS,
        "seed": SEED,
        "torch_threads": 1,
        "files": [{"file": str(p.relative_to(FIXTURES)), "size": p.stat().st_size, "sha256": sha256(p)}
                  for p in files],
    }
    if also:
        manifest["also"] = also
    (FIXTURES / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> None:
    h5 = FIXTURES / "formats" / "weights.h5"
    if h5.exists():
        shutil.copyfile(h5, FIXTURES / "formats" / "weights.h5.keep")
        shutil.move(FIXTURES / "formats" / "weights.h5.keep", REPO / "Fixtures" / ".weights.h5.keep")
    for sub in ("records", "safetensors", "tokenizer", "keys", "images", "formats", "openmuse", "lora", "quant"):
        shutil.rmtree(FIXTURES / sub, ignore_errors=True)
    (FIXTURES / "formats").mkdir(parents=True, exist_ok=True)
    if (REPO / "Fixtures" / ".weights.h5.keep").exists():
        shutil.move(REPO / "Fixtures" / ".weights.h5.keep", FIXTURES / "formats" / "weights.h5.keep")
    with tempfile.TemporaryDirectory() as scratch:
        tok = clip_tokenizer(Path(scratch))
    write_tokenizer_fixture(FIXTURES / "tokenizer", tok)
    write_dtype_fixture(FIXTURES / "safetensors")
    write_key_lists(FIXTURES / "keys")
    write_image_fixtures(FIXTURES / "images")
    write_format_fixtures(FIXTURES / "formats")
    write_quant_fixture(FIXTURES / "quant")
    for name, is512, seed in (("tiny-256", False, SEED), ("tiny-512", True, SEED + 1)):
        pipe = build_pipeline(tiny_transformer_config(resolution_512=is512), tiny_vq_config(), tiny_text_config(), tok,
                              seed, transformer_gains=TRANSFORMER_GAINS, vq_gains=VQ_GAINS)
        folder = FIXTURES / "records" / name
        save_pipeline(pipe, folder / "model", variant_fp16=not is512)
        record_pipeline(name, pipe, folder, seed)
        print(f"wrote {folder}")
        if not is512:
            write_lora_fixture(FIXTURES / "lora" / name, folder / "model", seed + 7)
            write_fp16_record(FIXTURES / "records" / f"{name}-fp16", folder / "model", seed + 9)
        if is512:
            write_open_muse_fixture(FIXTURES / "openmuse" / name, pipe, tok)
    # Away from the released configs (model notes §9.14): biases everywhere, norms without gains, hidden_size equal to
    # block_out_channels (no kv_mapper), a VQ mid-block attention, exact-GELU CLIP with one layer and the modern
    # eos_token_id (pooling at the first <|endoftext|> instead of argmax); and the scheduler config's other masking
    # schedule, linear, which text-to-image and image-to-image must follow (inpainting always runs linear).
    text = tiny_text_config()
    text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.projection_dim = 8, 16, 1, 12
    text.hidden_act, text.eos_token_id, text.num_attention_heads = "gelu", 49407, 2
    variant = tiny_transformer_config(resolution_512=True)
    variant.update(use_bias=True, ln_elementwise_affine=False, hidden_size=24, block_out_channels=24, in_channels=16,
                   encoder_hidden_size=8, cond_embed_dim=12, num_res_blocks=1, num_hidden_layers=1,
                   num_attention_heads=3, block_num_heads=3, intermediate_size=20)
    vq = tiny_vq_config()
    vq.update(mid_block_add_attention=True, norm_num_groups=2, layers_per_block=2, block_out_channels=[4, 8, 8],
              latent_channels=6)
    pipe = build_pipeline(variant, vq, text, tok, SEED + 2, transformer_gains=TRANSFORMER_GAINS, vq_gains=VQ_GAINS)
    pipe.scheduler.register_to_config(masking_schedule="linear")
    folder = FIXTURES / "records" / "tiny-variant"
    save_pipeline(pipe, folder / "model")
    record_pipeline("tiny-variant", pipe, folder, SEED + 2)
    print(f"wrote {folder}")
    (FIXTURES / "formats" / "weights.h5.keep").unlink(missing_ok=True)
    write_manifest()
    print("wrote", FIXTURES / "MANIFEST.json")


if __name__ == "__main__":
    main()
