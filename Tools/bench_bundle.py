"""Benchmarks `amused convert` to bundles on a checkpoint (the full-size random one from Tools/make_fullsize.py),
in one run: conversion time and peak memory per preset, bundle size against the float32 checkpoint, the transformer
forward (batch 2, one guided step) from each bundle against the float32 checkpoint (time and peak RSS, each in its own
process), the zstd-compressed size, and, with --record, each bundle's parity metrics against a reference record.

    Tools/.venv/bin/python Tools/bench_bundle.py [--model .fullsize/amused-256/model] [--out /tmp/amused-bundles]
        [--presets int8,int4,fp16,mixed] [--record .fullsize/amused-256-pipeline] [--amused .build/release/amused]

Prints a Markdown table (the README's figures come from it). Build first: swift build -c release.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path


def run_measured(cmd: list[str]) -> tuple[float, float, str, str]:
    """Runs cmd with os.wait4 so the peak RSS is this child's alone."""
    start = time.time()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        os.close(r_out)
        os.close(r_err)
        os.execvp(cmd[0], cmd)
    os.close(w_out)
    os.close(w_err)
    out, err = b"", b""
    import select
    fds = [r_out, r_err]
    while fds:
        ready, _, _ = select.select(fds, [], [])
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                fds.remove(fd)
                os.close(fd)
            elif fd == r_out:
                out += chunk
            else:
                err += chunk
    _, status, usage = os.wait4(pid, 0)
    seconds = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()}")
    return seconds, usage.ru_maxrss / 1024, out.decode(), err.decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".fullsize/amused-256/model")
    ap.add_argument("--out", default="/tmp/amused-bundles")
    ap.add_argument("--presets", default="int8,int4,fp16,mixed")
    ap.add_argument("--record")
    ap.add_argument("--amused", default=".build/release/amused")
    ap.add_argument("--runs", default="3")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    fp32 = sum((model / c / f).stat().st_size for c, f in (("transformer", "diffusion_pytorch_model.safetensors"),
                                                           ("vqvae", "diffusion_pytorch_model.safetensors"),
                                                           ("text_encoder", "model.safetensors")))
    largest = 49408 * 768 * 4  # the largest tensor in float32 (the CLIP token embedding, 145 MiB)
    print(f"float32 checkpoint (text encoder + transformer + VQ-GAN): {fp32} bytes; largest tensor {largest} bytes\n")
    print("| preset | bundle bytes | × fp32 | convert s | convert peak RSS MiB | forward s (fp32 s) | × fp32 | "
          "forward peak RSS MiB (fp32) | × fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    _, ref_rss, ref_json, _ = run_measured([args.amused, "bench", str(model), "--part", "transformer", "--runs",
                                            args.runs, "--json"])
    ref = json.loads(ref_json)["transformer"]
    bundles = {}
    for preset in args.presets.split(","):
        path = out / f"{preset}.amused"
        seconds, rss, _, _ = run_measured([args.amused, "convert", str(model), "--out", str(path), "--quantize", preset])
        bundles[preset] = path
        size = path.stat().st_size
        # The float32 reference forward again in the same run, right before the bundle's, so drift cancels.
        _, fp_rss, fp_json, _ = run_measured([args.amused, "bench", str(model), "--part", "transformer", "--runs",
                                              args.runs, "--json"])
        _, b_rss, b_json, _ = run_measured([args.amused, "bench", str(path), "--part", "transformer", "--runs",
                                            args.runs, "--json"])
        f = json.loads(fp_json)["transformer"]["best_seconds"]
        b = json.loads(b_json)["transformer"]["best_seconds"]
        print(f"| {preset} | {size} | {size / fp32:.3f} | {seconds:.1f} | {rss:.0f} | {b:.3f} ({f:.3f}) | {b / f:.2f} | "
              f"{b_rss:.0f} ({fp_rss:.0f}) | {b_rss / fp_rss:.2f} |", flush=True)
    if "int8" in bundles:
        packed = out / "int8.zst.amused"
        seconds, rss, _, _ = run_measured([args.amused, "convert", str(bundles["int8"]), "--compress", "--out",
                                           str(packed)])
        print(f"\nint8 compressed (zstd level 9, byte planes where they help): {packed.stat().st_size} bytes "
              f"({packed.stat().st_size / fp32:.3f}× fp32), {seconds:.1f} s, peak RSS {rss:.0f} MiB")
    if args.record:
        print("\n| preset | case | KL (nats) | top-1 | unmasked-set agreement | final tokens | PSNR dB | logits cosine |")
        print("|---|---|---|---|---|---|---|---|")
        for preset, path in bundles.items():
            p = subprocess.run([args.amused, "verify", str(path), "--reference", args.record, "--json"],
                               capture_output=True, text=True)
            report = json.loads(p.stdout)
            for c in report["cases"]:
                q = c.get("quantization")
                cos = next((m["cosine"] for m in c["metrics"] if m["tensor"].endswith("logits")), "")
                if q:
                    print(f"| {preset} | {c['name']} | {float(q['kl_mean']):.4f} | {float(q['top1']):.4f} | "
                          f"{float(q['kept_agreement']):.4f} | {float(q['final_token_agreement']):.4f} | "
                          f"{q['psnr_db'] if isinstance(q['psnr_db'], str) else round(float(q['psnr_db']), 2)} | |")
                elif cos:
                    print(f"| {preset} | {c['name']} | | | | | | {float(cos):.6f} |")


if __name__ == "__main__":
    main()
