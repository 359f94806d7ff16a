#!/usr/bin/env python3
"""The quantization quality table of the trained default: for each precision, the bundle's size, its parity
measures against the float32 model on the model's reference record (teacher-forced KL and top-1, kept-set
agreement; free-running final tokens and PSNR), and the task accuracies of images the bundle draws with
`amused generate` (Tools/eval_default.py's prompts and checker):

    Tools/.venv/bin/python Tools/quality_table.py --model Fixtures/models/shapes-64 \
        --record Fixtures/records/shapes-64 --out docs/results/quality-shapes-64.json

Prints a Markdown table. Everything is measured by the Swift tool (.build/release/amused by default).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_default  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GALLERY_COLUMNS = ("fp32", "int8", "int4 g64")
GALLERY_PROMPTS = ("a red circle on a blue background", "a green square on a yellow background",
                   "a white triangle on a black background", "a purple circle on a orange background",
                   "a red triangle on a white background", "a blue circle on a green background")
VARIANTS = [("fp32", ["--quantize", "fp32"], "fp32"), ("fp16", ["--quantize", "fp16"], "fp16"),
            ("bf16", ["--quantize", "bf16"], "bf16"), ("int8", ["--quantize", "int8"], "int8"),
            ("mixed", ["--quantize", "mixed"], "mixed"),
            ("int4 g32", ["--quantize", "int4", "--int4-group", "32"], "int4"),
            ("int4 g64", ["--quantize", "int4", "--int4-group", "64"], "int4"),
            ("int4 g128", ["--quantize", "int4", "--int4-group", "128"], "int4")]


def psnr_capped(value) -> float:
    """A case's PSNR capped at 99 dB: identical images are reported as null or as the string "inf" (JSON has no
    infinity), which happens when the bundle reproduces the float32 model exactly (fp16 of float16-stored weights)."""
    return 99.0 if value is None else min(float(value), 99.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--amused", default=str(REPO / ".build/release/amused"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep", help="keep the bundles and images in this folder")
    ap.add_argument("--gallery", help="write a PNG: GALLERY_PROMPTS (rows) × fp32 / int8 / int4 g64 (columns), seed 0")
    args = ap.parse_args()
    items = eval_default.prompts()
    rows = []
    gallery: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, flags, profile in VARIANTS:
            slug = name.replace(" ", "-")
            bundle = work / f"{slug}.amused"
            if bundle.exists():
                bundle.unlink()
            subprocess.run([args.amused, "convert", args.model, "--out", str(bundle), *flags], check=True,
                           capture_output=True)
            run = subprocess.run([args.amused, "verify", str(bundle), "--reference", args.record, "--profile",
                                  profile, "--baseline", args.model, "--json"], capture_output=True, text=True)
            report = json.loads(run.stdout)
            qs = [c["quantization"] for c in report["cases"] if c.get("quantization")]
            parity = {}
            if qs:
                n = sum(q["masked_predictions"] for q in qs)
                parity = {
                    "kl_mean": sum(q["kl_mean"] * q["masked_predictions"] for q in qs) / n,
                    "top1": sum(q["top1"] * q["masked_predictions"] for q in qs) / n,
                    "kept_agreement": float(np.mean([q["kept_agreement"] for q in qs])),
                    "final_token_agreement": float(np.mean([q["final_token_agreement"] for q in qs])),
                    "psnr_db": float(np.mean([psnr_capped(q["psnr_db"]) for q in qs])),
                }
            results = []
            images = work / slug
            images.mkdir(exist_ok=True)
            for seed in range(args.seeds):
                cmd = [args.amused, "generate", "--model", str(bundle), "--seed", str(seed),
                       "--out", str(images / f"s{seed}.png")]
                for p in items:
                    cmd += ["--prompt", p["prompt"]]
                subprocess.run(cmd, check=True, capture_output=True)
                for k, p in enumerate(items):
                    img = np.asarray(Image.open(images / f"s{seed}-{k}.png").convert("RGB"))
                    results.append(eval_default.checked(p, seed, img))
            scores = eval_default.score(results)
            rows.append({"variant": name, "bytes": bundle.stat().st_size, "verify_pass": report["pass"],
                         "parity": parity, "task": scores})
            s = scores["all"]
            print(f"{name}: {bundle.stat().st_size} B, verify {'pass' if report['pass'] else 'FAIL'}, "
                  f"{parity}, colour {s['object_colour']}, background {s['background']}, shape {s['shape']}",
                  flush=True)
            if args.gallery and name in GALLERY_COLUMNS:
                pick = [next(k for k, p in enumerate(items) if p["prompt"] == g) for g in GALLERY_PROMPTS]
                gallery[name] = [np.asarray(Image.open(images / f"s0-{k}.png").convert("RGB")) for k in pick]
            if not args.keep:
                bundle.unlink()
    if args.gallery:
        pad = 4
        cols = [gallery[c] for c in GALLERY_COLUMNS]
        side = cols[0][0].shape[0] * 2
        canvas = np.full((len(GALLERY_PROMPTS) * (side + pad) + pad, len(cols) * (side + pad) + pad, 3), 255, np.uint8)
        for j, col in enumerate(cols):
            for i, img in enumerate(col):
                big = img.repeat(2, 0).repeat(2, 1)  # nearest ×2, so the 64-pixel images are visible
                canvas[pad + i * (side + pad):pad + i * (side + pad) + side, pad + j * (side + pad):pad + j * (side + pad) + side] = big
        Image.fromarray(canvas).save(args.gallery)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "record": args.record, "rows": rows}, indent=1) + "\n")
    print("\n| bundle | bytes | verify | KL (nats) | top-1 | kept | final tokens | PSNR dB | colour | background | shape | held-out pairs (all three) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, t = r["parity"], r["task"]
        fmt = (lambda k, f: f.format(p[k]) if k in p else "—")
        print(f"| {r['variant']} | {r['bytes']:,} | {'pass' if r['verify_pass'] else 'fail'} | {fmt('kl_mean', '{:.2g}')} | "
              f"{fmt('top1', '{:.3f}')} | {fmt('kept_agreement', '{:.3f}')} | {fmt('final_token_agreement', '{:.3f}')} | "
              f"{fmt('psnr_db', '{:.1f}')} | {t['all']['object_colour']:.1%} | {t['all']['background']:.1%} | "
              f"{t['all']['shape']:.1%} | {t['held-out pairs']['all_three']:.1%} |")


if __name__ == "__main__":
    main()
