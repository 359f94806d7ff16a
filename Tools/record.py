#!/usr/bin/env python3
"""Records a reference record (docs/reference-record.md) of any diffusers-format aMUSEd checkpoint — a fine-tune, a
LoRA-merged model, the released ones — with diffusers on the CPU, one torch thread, deterministically:

    Tools/.venv/bin/python Tools/record.py --model DIR|HUB_ID [--revision R] [--variant fp16]
        [--lora F [--lora-scale S]] [--cases quick|full | --only CASE,…] [--prompts FILE] [--seed S] --out RECORD

Every case kind, at the sizes and batches its config implies: the text encoder (the prompts of --prompts, one per
line, or a built-in set), the transformer and the VQ-GAN at batch 1 and 2, and the pipelines seed for seed —
text-to-image (guided, unguided, with negative prompts, 2:1), image-to-image at three strengths and inpainting.
`quick` keeps one case of each pipeline kind (about 3 minutes for full-size amused-256 on 2 cores), `full` all nine
(about 8). A hub id is read from the local Hugging Face cache only (HF_HUB_OFFLINE=1: nothing is downloaded).
Then, in CI and with no Python: `amused verify MODEL --reference RECORD` or `amused convert MODEL --out F.amused
--quantize int8 --verify RECORD`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # the cache only: a record is made of what the user has, never a download

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import record_pipeline  # noqa: E402  (also sets torch to one thread, CPU)

import torch  # noqa: E402
from diffusers import AmusedPipeline  # noqa: E402

QUICK = {"text_many", "text_b1", "text_b2", "transformer_b1", "transformer_b2", "vq_decode_b1", "vq_decode_b2",
         "vq_encode_b1", "vq_encode_b2", "t2i_b1_cfg", "i2i_b1_s03", "inpaint_b1_cfg"}


def load(model: str, revision: str | None, variant: str | None, lora: str | None, scale: float) -> AmusedPipeline:
    pipe = AmusedPipeline.from_pretrained(model, revision=revision, variant=variant, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        from diffusers.loaders import AmusedLoraLoaderMixin
        from diffusers.utils.peft_utils import scale_lora_layers
        # As train_amused.py's load hook does (and `amused --lora F --lora-scale S` fuses): the LoraConfig recorded
        # in the file's header (lora_adapter_metadata, what `amused finetune` writes) or its alphas when it has
        # them, else alpha = r; times the scale.
        state, alphas, metadata = AmusedLoraLoaderMixin.lora_state_dict(
            str(Path(lora).parent), weight_name=Path(lora).name, return_lora_metadata=True)
        if metadata:
            alphas = None  # diffusers takes one or the other
        AmusedLoraLoaderMixin.load_lora_into_transformer(state, network_alphas=alphas, transformer=pipe.transformer,
                                                         metadata=metadata)
        if any(k.startswith("text_encoder.") for k in state):
            AmusedLoraLoaderMixin.load_lora_into_text_encoder(state, network_alphas=alphas,
                                                              text_encoder=pipe.text_encoder, prefix="text_encoder",
                                                              metadata=metadata)
        for part in (pipe.transformer, pipe.text_encoder):
            scale_lora_layers(part, scale)
    return pipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a diffusers pipeline folder or a hub id in the local cache")
    p.add_argument("--revision", help="with a hub id: the branch, tag or commit")
    p.add_argument("--variant", help="read *.{variant}.safetensors (e.g. fp16), widened to float32")
    p.add_argument("--lora", help="a diffusers/PEFT LoRA file to apply")
    p.add_argument("--lora-scale", type=float, default=1.0)
    p.add_argument("--cases", choices=("quick", "full"), default="quick")
    p.add_argument("--only", help="comma-separated case names instead of --cases (e.g. transformer_b1,t2i_b1_defaults)")
    p.add_argument("--prompts", help="a text file, one prompt per line, for the text encoder's many-prompt case")
    p.add_argument("--seed", type=int, default=20240101)
    p.add_argument("--out", required=True, help="the record folder to write (record.json, record.safetensors)")
    a = p.parse_args()

    pipe = load(a.model, a.revision, a.variant, a.lora, a.lora_scale)
    out = Path(a.out)
    local = Path(a.model)
    # The record names its model relative to itself when it can (keep the two together), else absolutely.
    model = os.path.relpath(local.resolve(), out.resolve()) if local.exists() else a.model
    prompts = None
    if a.prompts:
        prompts = [line.rstrip("\n") for line in Path(a.prompts).read_text(encoding="utf-8").splitlines()]
    # A model that recommends its own sampling settings (model_index.json "_amused_defaults", read by `amused
    # generate` when no flags are given) gets one more case: text-to-image at those settings, seed 0, on the first
    # prompt of --prompts, so that a bare `amused generate` is checked against diffusers too.
    extra = []
    index = Path(a.model) / "model_index.json"
    defaults = json.loads(index.read_text()).get("_amused_defaults") if index.exists() else None
    if defaults:
        extra.append(("t2i_b1_defaults", dict(prompts=[(prompts or ["a photo of a cat"])[0]], seed=0,
                                              steps=defaults.get("steps", 12),
                                              guidance_scale=defaults.get("guidance", 10.0))))
    only = None if a.cases == "full" else QUICK | {"t2i_b1_defaults"}
    if a.only:
        only = set(a.only.split(","))
    record_pipeline("record", pipe, out, a.seed, model=model, only=only,
                    prompts=prompts, t2i_extra=extra)
    print(f"wrote {out}/record.json and record.safetensors ({a.cases} cases) for {a.model}")


if __name__ == "__main__":
    main()
