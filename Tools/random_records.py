#!/usr/bin/env python3
"""Reference records from configs, prompts and seeds that are not committed: random tiny aMUSEd configs (biases on
or off, norm gains on or off, with or without down/up-sampling, hidden_size equal to block_out_channels or not),
random prompts, seeds, step counts, guidance, strengths and masks. For checking parity away from the fixtures:

    Tools/.venv/bin/python Tools/random_records.py --count 10 --out /tmp/records --seed 1
    for r in /tmp/records/*/; do .build/release/amused verify --reference "$r" --json; done
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amused_reference import (  # noqa: E402
    RecordWriter, build_pipeline, clip_tokenizer, encode_prompts, save_pipeline, tiny_text_config,
    tiny_transformer_config, tiny_vq_config,
)
from make_fixtures import smooth_images  # noqa: E402
from diffusers import AmusedImg2ImgPipeline, AmusedInpaintPipeline  # noqa: E402

WORDS = ["cat", "dog", "winter", "mountains", "a", "the", "photo", "of", "painting", "red", "car", "🐱", "café",
         "HDR", "8k", "!!!", "astronaut", "horse", "bowl", "fruit", "van", "gogh", "style", "2024"]


def random_config(rng: random.Random) -> tuple[dict, dict]:
    is512 = rng.random() < 0.5
    t = tiny_transformer_config(resolution_512=is512)
    heads = rng.choice([1, 2, 4])
    block = rng.choice([8, 16, 24])
    hidden = block if rng.random() < 0.3 else rng.choice([16, 32])
    t.update(use_bias=rng.random() < 0.4, ln_elementwise_affine=rng.random() < 0.7, block_out_channels=block,
             hidden_size=hidden, num_attention_heads=heads if hidden % heads == 0 else 1,
             block_num_heads=heads if block % heads == 0 else 1, num_res_blocks=rng.choice([1, 2]),
             num_hidden_layers=rng.choice([1, 2, 3]), intermediate_size=rng.choice([16, 40]),
             in_channels=rng.choice([8, 12]))
    vq = tiny_vq_config()
    vq.update(mid_block_add_attention=rng.random() < 0.3)
    return t, vq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        tok = clip_tokenizer(Path(scratch))
    for n in range(args.count):
        tcfg, vcfg = random_config(rng)
        pipe = build_pipeline(tcfg, vcfg, tiny_text_config(), tok, rng.randrange(1 << 30),
                              transformer_gains={"mlm_layer.conv2": rng.choice([2.0, 4.0, 6.0])},
                              vq_gains={"decoder.conv_out.weight": 0.25, "decoder.conv_out.bias": 0.5})
        schedule = rng.choice(["cosine", "linear"])  # the scheduler config's masking schedule (inpainting: linear)
        pipe.scheduler.register_to_config(masking_schedule=schedule)
        folder = Path(args.out) / f"random-{args.seed}-{n}"
        save_pipeline(pipe, folder / "model")
        rec = RecordWriter(folder)
        grid = tcfg["sample_size"]
        size = grid * 4

        def prompt() -> str:
            return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))

        with torch.no_grad():
            prompts = [prompt() for _ in range(rng.choice([1, 2]))]
            ids, hidden, embeds = encode_prompts(pipe, prompts)
            rec.add("text", "text_encoder", {"input_ids": ids, "hidden_states_penultimate": hidden,
                                             "text_embeds": embeds}, prompts=prompts)
        for k in range(3):
            kind = rng.choice(["text_to_image", "image_to_image", "inpaint"])
            b = rng.choice([1, 2])
            seed = rng.randrange(1 << 31)
            steps = rng.choice([4, 8, 12])
            guidance = rng.choice([1.0, 4.0, 10.0])
            temperature = [rng.choice([1.0, 2.0, 3.0]), rng.choice([0.0, 0.5])]
            keys = dict(prompts=[prompt() for _ in range(b)], negative_prompts=None, seed=seed, steps=steps,
                        guidance_scale=guidance, temperature=temperature, height=size, width=size,
                        aesthetic_score=6.0, crop_coord=[0, 0])
            record_steps: list[torch.Tensor] = []
            common = dict(prompt=keys["prompts"], generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                          guidance_scale=guidance, temperature=tuple(temperature), output_type="pil",
                          callback=lambda i, t, lat: record_steps.append(lat.clone()), callback_steps=1)
            extra = {}
            with torch.no_grad():
                if kind == "text_to_image":
                    images = pipe(height=size, width=size, **common).images
                else:
                    init = smooth_images(b, size, size, seed)
                    extra["init_image"] = torch.from_numpy(init)
                    strength = rng.choice([0.3, 0.5, 0.7, 1.0])
                    keys["strength"] = strength
                    if kind == "image_to_image":
                        p = AmusedImg2ImgPipeline(**pipe.components)
                        p.set_progress_bar_config(disable=True)
                        images = p(image=[Image.fromarray(i) for i in init], strength=strength, **common).images
                    else:
                        mask = (np.random.default_rng(seed).random((b, grid, grid)) < 0.5).astype(np.uint8) * 255
                        extra["mask"] = torch.from_numpy(mask)
                        p = AmusedInpaintPipeline(**pipe.components)
                        p.set_progress_bar_config(disable=True)
                        images = p(image=[Image.fromarray(i) for i in init],
                                   mask_image=[Image.fromarray(m, mode="L") for m in mask], strength=strength,
                                   **common).images
                        pipe.scheduler.register_to_config(masking_schedule=schedule)
            pixels = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
            rec.add(f"case{k}", kind, {**extra, "tokens": torch.stack(record_steps), "image": pixels}, **keys)
        rec.write()
        print(folder)


if __name__ == "__main__":
    main()
