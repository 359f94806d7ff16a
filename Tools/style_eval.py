"""Measures a style LoRA trained by `amused finetune` on the trained default (docs/finetune.md), with diffusers.

    Tools/.venv/bin/python Tools/style_eval.py --write-image Fixtures/finetune/striped-red-circle.png
    Tools/.venv/bin/python Tools/style_eval.py --lora L.safetensors \
        --out docs/results/style-striped.json --gallery docs/images/style-striped-gallery.png
    Tools/.venv/bin/python Tools/style_eval.py --style outlined ...  # the outlined style (hollowness), which the
                                                                     # default now knows by name
    Tools/.venv/bin/python Tools/style_eval.py --model M ...         # a LoRA of another model than the default

The LoRA is loaded the way diffusers loads any LoRA file (AmusedLoraLoaderMixin.lora_state_dict with its header's
lora_adapter_metadata, load_lora_into_transformer), so this also shows diffusers reads the file at the alpha it
records. Prompts: every shape × colour × background of PROMPT_GRID except the training image's own, 50 in all;
none is among the preservation prompts (Fixtures/finetune/preserve-prompts.txt uses other backgrounds); each is drawn three ways with the same seeds — by the base model, by the LoRA
model with the style word ("… in sks style") and by the LoRA model without it. Scored by Tools/shapes.py: the
style rate (outlined: hollowness above OUTLINED_THRESHOLD; striped: STRIPED_MIN_BANDS background bands or more
across the object), colour / shape / background accuracy against the prompt, and
how far the word-free images moved from the base model's (pixels and checker verdicts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402
from amused_reference import REPO, VERSIONS, encode_prompts  # noqa: E402
from diffusers import AmusedPipeline  # noqa: E402
from diffusers.loaders import AmusedLoraLoaderMixin  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(2)

MODEL = REPO / "Fixtures" / "models" / "shapes-64"
STYLE_WORD = "in sks style"
TRAIN_PROMPT = "a red circle on a white background in sks style"
PROMPT_GRID = {
    "shape": list(shapes.SHAPES),
    "colour": ["red", "green", "blue", "yellow", "orange", "purple"],
    "background": ["white", "black", "yellow"],
}
SEEDS = (0, 1)


# Each style the demonstration can measure: how its training image is drawn, the checker's measure of one image and
# the verdict "drawn in this style" on that measure (Tools/shapes.py).
STYLES = {
    "outlined": {"render": shapes.render_outlined, "measure": ("hollowness", shapes.hollowness),
                 "hit": lambda v: v > shapes.OUTLINED_THRESHOLD, "threshold": shapes.OUTLINED_THRESHOLD},
    "striped": {"render": shapes.render_striped, "measure": ("stripe_bands", shapes.stripe_bands),
                "hit": lambda v: v >= shapes.STRIPED_MIN_BANDS, "threshold": shapes.STRIPED_MIN_BANDS},
}


def training_image(style: str) -> np.ndarray:
    return STYLES[style]["render"]("circle", "red", "white", 32.0, 32.0, 40.0)


def style_scores(images: np.ndarray, style: str, values: list | None = None) -> dict:
    """The share of images the checker counts as drawn in `style`, and the mean of its measure (`values`, when the
    caller has measured them already)."""
    name, measure = STYLES[style]["measure"]
    values = [measure(img) for img in images] if values is None else values
    hit = [STYLES[style]["hit"](v) for v in values]
    out = {f"{style}_rate": round(sum(hit) / len(values), 4), f"mean_{name}": round(float(np.mean(values)), 4)}
    if style != "outlined":
        # The default knows one style by name ("… in outlined style"), and a ragged outline can cross the stripe
        # checker's rows twice: so the outlined share too, and the style's share among the images that are not hollow
        # (clean striped renders have hollowness 0, outlined ones 0.28 or more).
        hollow = [shapes.hollowness(img) > shapes.OUTLINED_THRESHOLD for img in images]
        out["outlined_rate"] = round(sum(hollow) / len(values), 4)
        out[f"{style}_not_outlined_rate"] = round(sum(h and not o for h, o in zip(hit, hollow)) / len(values), 4)
    return out


def prompts() -> list[dict]:
    out = []
    for s in PROMPT_GRID["shape"]:
        for c in PROMPT_GRID["colour"]:
            for b in PROMPT_GRID["background"]:
                if b == c or (s, c, b) == ("circle", "red", "white"):
                    continue  # (the training image's own prompt is left out: only unseen prompts are scored)
                out.append({"shape": s, "colour": c, "background": b,
                            "text": shapes.MAIN_TEMPLATE.format(c=c, s=s, b=b)})
    return out


def pipeline(lora: str | None) -> AmusedPipeline:
    pipe = AmusedPipeline.from_pretrained(str(MODEL), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        state, alphas, metadata = AmusedLoraLoaderMixin.lora_state_dict(
            str(Path(lora).parent), weight_name=Path(lora).name, return_lora_metadata=True)
        assert metadata and "transformer.lora_alpha" in metadata, "the file records no alpha"
        AmusedLoraLoaderMixin.load_lora_into_transformer(state, network_alphas=None, transformer=pipe.transformer,
                                                         metadata=metadata)
        if any(k.startswith("text_encoder.") for k in state):
            AmusedLoraLoaderMixin.load_lora_into_text_encoder(state, network_alphas=None, text_encoder=pipe.text_encoder,
                                                              prefix="text_encoder", metadata=metadata)
        scalings = {v for m in pipe.transformer.modules() if isinstance(getattr(m, "scaling", None), dict) for v in m.scaling.values()}
        print(f"diffusers loaded {len(state)} LoRA tensors at scaling {sorted(scalings)} (lora_alpha "
              f"{metadata['transformer.lora_alpha']} / r {metadata['transformer.r']})", flush=True)
    return pipe


def draw(pipe: AmusedPipeline, texts: list[str], seed: int) -> np.ndarray:
    defaults = json.loads((MODEL / "model_index.json").read_text())["_amused_defaults"]
    out = []
    for i in range(0, len(texts), 18):
        gen = torch.Generator().manual_seed(seed)
        images = pipe(texts[i:i + 18], num_inference_steps=defaults["steps"], guidance_scale=defaults["guidance"],
                      generator=gen, output_type="np").images
        out.append((images * 255).round().astype(np.uint8))
    return np.concatenate(out)


@torch.no_grad()
def word_moves_text(pipe: AmusedPipeline, plain: list[str], styled: list[str]) -> dict:
    """How far appending the style word moves the text encoder's outputs (relative L2 distance, the mean over the
    prompts): the pooled embedding, which drives every AdaLN modulation, and hidden_states[-2], the cross-attention's
    keys and values."""
    (_, h0, p0), (_, h1, p1) = encode_prompts(pipe, plain), encode_prompts(pipe, styled)
    rel = lambda a, b: float(((b - a).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).mean())
    return {"pooled": round(rel(p0, p1), 4), "hidden_states[-2]": round(rel(h0, h1), 4)}


def score(images: np.ndarray, items: list[dict], style: str) -> dict:
    verdicts = [shapes.classify(img) for img in images]
    n = len(items)
    # The style with the prompt's colours: a picture that dissolves into coloured noise can cross the stripe
    # checker's rows often enough to count as striped, but not with the object and background it was asked for.
    _, measure = STYLES[style]["measure"]
    values = [measure(img) for img in images]
    clean = sum(STYLES[style]["hit"](m) and v["colour"] == it["colour"] and v["background"] == it["background"]
                for m, v, it in zip(values, verdicts, items))
    return {
        **style_scores(images, style, values),
        f"{style}_with_right_colours_rate": round(clean / n, 4),
        **{f"{k}_accuracy": round(sum(v[k] == it[k] for v, it in zip(verdicts, items)) / n, 4)
           for k in ("colour", "shape", "background")},
    }, verdicts


def main() -> None:
    global MODEL
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(MODEL),
                   help="the model the LoRA was trained on (default: the trained default)")
    p.add_argument("--style", choices=sorted(STYLES), default="striped", help="the style the LoRA was trained on")
    p.add_argument("--write-image", help="write the style's training image (64×64 PNG) here and stop")
    p.add_argument("--lora")
    p.add_argument("--out")
    p.add_argument("--gallery")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds to draw each prompt with")
    a = p.parse_args()
    MODEL = Path(a.model)
    if a.write_image:
        image = training_image(a.style)
        Image.fromarray(image).save(a.write_image)
        print(f"{a.write_image}: {style_scores(image[None], a.style)}")
        return
    items = prompts()
    plain = [it["text"] for it in items]
    styled = [t + " " + STYLE_WORD for t in plain]
    base, tuned = pipeline(None), pipeline(a.lora)
    model = str(MODEL.relative_to(REPO)) if MODEL.is_relative_to(REPO) else str(MODEL)
    result: dict = {"model": model, "lora": a.lora, "prompts": len(items), "seeds": a.seeds, "style_word": STYLE_WORD,
                    "train_prompt": TRAIN_PROMPT, "style": a.style, "threshold": STYLES[a.style]["threshold"],
                    "reference": {k: VERSIONS[k] for k in ("torch", "diffusers", "peft")}, "runs": {}}
    result["word_moves_text_encoder"] = {"base": word_moves_text(base, plain, styled),
                                         "LoRA": word_moves_text(tuned, plain, styled)}
    # The training prompt itself, 20 samples each (one batch of 20, so every sample gets its own draws).
    same_prompt = {}
    for name, pipe in (("base", base), ("LoRA", tuned)):
        images = draw(pipe, [TRAIN_PROMPT] * 20, 0)
        same_prompt[name] = images
        result.setdefault("train_prompt_20_samples", {})[name] = style_scores(images, a.style)
    keep = {}
    for seed in a.seeds:
        runs = {"base, without the word": draw(base, plain, seed), "base, with the word": draw(base, styled, seed),
                "LoRA, with the word": draw(tuned, styled, seed), "LoRA, without the word": draw(tuned, plain, seed)}
        verdicts = {}
        for name, images in runs.items():
            s, verdicts[name] = score(images, items, a.style)
            result["runs"].setdefault(name, []).append(s)
        same = runs["base, without the word"], runs["LoRA, without the word"]
        vb, vl = verdicts["base, without the word"], verdicts["LoRA, without the word"]
        result.setdefault("without_word_vs_base", []).append({
            "mean_abs_pixel_difference": round(float(np.abs(same[0].astype(int) - same[1].astype(int)).mean()), 3),
            "identical_images": round(float(np.mean([(x == y).all() for x, y in zip(*same)])), 4),
            "same_checker_verdict": round(sum(x["colour"] == y["colour"] and x["shape"] == y["shape"]
                                              and x["background"] == y["background"] for x, y in zip(vb, vl)) / len(items), 4),
        })
        keep[seed] = runs
    # Means over the seeds.
    for name, per_seed in result["runs"].items():
        result["runs"][name] = {k: round(float(np.mean([s[k] for s in per_seed])), 4) for k in per_seed[0]}
    result["without_word_vs_base"] = {k: round(float(np.mean([s[k] for s in result["without_word_vs_base"]])), 4)
                                      for k in result["without_word_vs_base"][0]}
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    if a.gallery:
        # Rows: six prompts (other shapes and colours than the training image); columns: base, LoRA without the
        # word, LoRA with the word; seed 0; each image 64 px shown at 2×.
        picks = [i for i, it in enumerate(items) if (it["shape"], it["colour"], it["background"]) in {
            ("square", "blue", "white"), ("triangle", "green", "black"), ("circle", "yellow", "black"),
            ("square", "orange", "yellow"), ("triangle", "purple", "white"), ("circle", "green", "yellow")}]
        runs = keep[a.seeds[0]]
        cols = ["base, without the word", "LoRA, without the word", "LoRA, with the word"]
        grid = np.concatenate([np.concatenate([runs[c][i] for c in cols], 1) for i in picks], 0)
        # Beside it: the training image, then the training prompt drawn by the base model and by the LoRA (4 each).
        side = np.full((grid.shape[0], 64 * 3, 3), 255, np.uint8)
        side[:64, :64] = training_image(a.style)
        for k in range(4):
            side[64 * (k + 1):64 * (k + 2), 64:128] = same_prompt["base"][k]
            side[64 * (k + 1):64 * (k + 2), 128:192] = same_prompt["LoRA"][k]
        grid = np.concatenate([side, np.full((grid.shape[0], 8, 3), 255, np.uint8), grid], 1)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(a.gallery)


if __name__ == "__main__":
    main()
