#!/usr/bin/env python3
"""Held-out evaluation of the trained default model: diffusers generates every prompt of the evaluation set at
12 steps, Tools/shapes.py's checker scores object colour, background colour and shape from the pixels.

    Tools/.venv/bin/python Tools/eval_default.py --model Fixtures/models/shapes-64 --guidance 4 \
        --out Fixtures/models/shapes-64/training/eval.json [--gallery eval.png] [--images DIR]

The prompts: every "a {colour} {shape} on a {colour} background" (8 colours × 3 shapes × 7 backgrounds = 168,
the held-out (colour, shape) pairs among them), plus 48 in the other caption templates; each with --seeds seeds.
--images DIR scores PNGs made elsewhere instead, named s{seed}-{index}.png: what
`amused generate --model M --prompt P0 --prompt P1 … --seed S --out DIR/sS.png` writes for the prompts in order
(`--list-prompts` prints them, one per line). --suffix " in outlined style" appends a style phrase to every prompt (the
default is trained with outlined shapes named that way); every report counts the images the outline checker reads as
outlined (Tools/shapes.py hollowness).
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


def prompts() -> list[dict]:
    out = []
    names = list(shapes.COLOURS)
    for c in names:
        for s in shapes.SHAPES:
            for b in names:
                if b != c:
                    out.append({"prompt": shapes.MAIN_TEMPLATE.format(c=c, s=s, b=b), "colour": c, "shape": s,
                                "background": b, "template": "main"})
    rng = np.random.default_rng(7)
    for k in range(48):
        c, b = rng.choice(names, 2, replace=False)
        s = shapes.SHAPES[k % 3]
        t = shapes.OTHER_TEMPLATES[k % len(shapes.OTHER_TEMPLATES)]
        out.append({"prompt": t.format(c=c, s=s, b=b), "colour": str(c), "shape": s, "background": str(b),
                    "template": "other"})
    for p in out:
        p["held_out"] = (p["colour"], p["shape"]) in shapes.HELD_OUT
    return out


def checked(prompt: dict, seed: int, image: np.ndarray) -> dict:
    """One image's entry for `score`: the prompt's fields, the checker's verdict and the outline measure."""
    return {**prompt, "seed": seed, "got": shapes.classify(image), "hollowness": shapes.hollowness(image)}


def score(items: list[dict]) -> dict:
    def acc(sel, key):
        sel = list(sel)
        return round(sum(i["got"][key] == i[key] for i in sel) / max(1, len(sel)), 4)
    groups = {"all": items, "seen pairs": [i for i in items if not i["held_out"]],
              "held-out pairs": [i for i in items if i["held_out"]],
              "main template": [i for i in items if i["template"] == "main"]}
    return {name: {"images": len(g), "object_colour": acc(g, "colour"), "background": acc(g, "background"),
                   "shape": acc(g, "shape"),
                   "outlined": round(sum(i["hollowness"] > shapes.OUTLINED_THRESHOLD for i in g) / max(1, len(g)), 4),
                   "all_three": round(sum(all(i["got"][k] == i[k] for k in ("colour", "background", "shape"))
                                          for i in g) / max(1, len(g)), 4)}
            for name, g in groups.items()}


def confusion(items: list[dict]) -> dict:
    """For each asked shape, how many images the checker read as each shape (None: no object found)."""
    return {s: {str(t): sum(i["shape"] == s and i["got"]["shape"] == t for i in items)
                for t in (*shapes.SHAPES, None)} for s in shapes.SHAPES}


@torch.no_grad()
def completion(model: str, count: int = 120) -> dict:
    """How well the transformer completes a real image's tokens, apart from the sampler: `count` rendered images
    (held-out pairs included) are tokenised, a random fraction of their tokens masked, every masked token filled by
    the argmax of one forward pass (text-conditioned, no guidance), and the decoded image scored by the checker."""
    import train_default as td
    from amused_reference import encode_prompts
    from diffusers import AmusedPipeline
    pipe = AmusedPipeline.from_pretrained(model)
    vq, tr = pipe.vqvae, pipe.transformer
    images, _, attrs = shapes.dataset(123, count, allow_held_out=True)
    texts = [shapes.MAIN_TEMPLATE.format(c=a["colour"], s=a["shape"], b=a["background"]) for a in attrs]
    ids = td.encode_tokens(vq, images)
    b, h, w = ids.shape
    _, hidden, pooled = encode_prompts(pipe, texts)
    micro = torch.tensor([td.MICRO_CONDS]).repeat(b, 1)
    gen = torch.Generator().manual_seed(0)
    report = {}
    for r in (0.0, 0.5, 0.8, 0.95, 1.0):
        flat = ids.reshape(b, -1)
        mask = torch.rand(flat.shape, generator=gen) < r
        inp = torch.where(mask, torch.full_like(flat, tr.config.vocab_size - 1), flat).reshape_as(ids)
        pred = tr(inp, hidden, pooled, micro).argmax(1).reshape(b, -1)
        filled = torch.where(mask, pred, flat).reshape_as(ids)
        recon = vq.decode(filled, force_not_quantize=True, shape=(b, h, w, vq.config.vq_embed_dim)).sample.clamp(0, 1)
        got = [shapes.classify(p) for p in (recon.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)]
        report[f"masked {r:.2f}"] = {k: round(float(np.mean([g[k] == a[k] for g, a in zip(got, attrs)])), 3)
                                     for k in ("colour", "background", "shape")}
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--temperature", type=float, nargs=2, default=[2.0, 0.0], metavar=("START", "END"),
                    help="the sampler's Gumbel temperature for choosing which tokens stay, start and end "
                         "(diffusers' default: 2 0)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", help="JSON report")
    ap.add_argument("--gallery", help="PNG of the first images")
    ap.add_argument("--images", help="score PNGs from this folder (s{seed}-{index}.png) instead of generating")
    ap.add_argument("--suffix", default="", help="append this to every prompt (e.g. ' in outlined style')")
    ap.add_argument("--list-prompts", action="store_true", help="print the prompts, one per line, and stop")
    ap.add_argument("--save", help="write the generated PNGs into this folder")
    ap.add_argument("--completion", action="store_true",
                    help="score one-pass completions of masked real images instead (the model apart from the sampler)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.completion:
        result = completion(args.model)
        print(json.dumps(result, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps({"model": args.model, "completion": result}, indent=1) + "\n")
        return
    from PIL import Image
    items = prompts()
    for p in items:
        p["prompt"] += args.suffix
    if args.list_prompts:
        print("\n".join(p["prompt"] for p in items))
        return
    results = []
    pipe = None
    if not args.images:
        from diffusers import AmusedPipeline
        pipe = AmusedPipeline.from_pretrained(args.model)
        pipe.set_progress_bar_config(disable=True)
    for seed in range(args.seeds):
        pics = []
        if pipe is not None:
            for i in range(0, len(items), 64):
                chunk = [p["prompt"] for p in items[i:i + 64]]
                g = torch.Generator().manual_seed(seed * 1000 + i)
                out = pipe(chunk, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=g,
                           temperature=tuple(args.temperature), output_type="np").images
                pics += [(x * 255).round().astype(np.uint8) for x in out]
        else:
            pics = [np.asarray(Image.open(Path(args.images) / f"s{seed}-{k}.png").convert("RGB"))
                    for k in range(len(items))]
        for k, (p, img) in enumerate(zip(items, pics)):
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(Path(args.save) / f"s{seed}-{k}.png")
            results.append({**checked(p, seed, img), "image": img})
    report = {"model": args.model, "suffix": args.suffix, "steps": args.steps, "guidance": args.guidance,
              "temperature": args.temperature, "seeds": args.seeds,
              "prompts": len(items), "scores": score(results), "shape_confusion": confusion(results)}
    print(json.dumps({k: report[k] for k in ("scores", "shape_confusion")}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.gallery:
        rows = [np.concatenate([r["image"] for r in results[j:j + 12]], 1) for j in range(0, 96, 12)]
        Image.fromarray(np.concatenate(rows, 0)).save(args.gallery)


if __name__ == "__main__":
    main()
