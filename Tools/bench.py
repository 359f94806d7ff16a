#!/usr/bin/env python3
"""Speed of the Swift graph against PyTorch, in one run on the same machine, on a full-size checkpoint:
one transformer forward at batch 2 (what one guided sampling step costs), one VQ decode of a 256×256 image and one
text encoding of 2 × 77 tokens (the prompt and the negative prompt).
Prints both times, the ratio (Swift / PyTorch) and the GFLOP/s each side reaches (FLOPs counted by torch's
FlopCounterMode: matmul/conv/bmm, 2 per multiply-add, as in docs/model-notes.md §7).

    swift build -c release
    Tools/.venv/bin/python Tools/bench.py [--model .fullsize/amused-256/model] [--runs 3] [--threads 2] [--pipeline]
        [--no-blas-rows] [--train-step] [--bundles int8,bf16]

--bundles converts the model to those presets (once, into /tmp/amused-bench-bundles) and adds a row per bundle to
every part and to the pipeline, with its time against PyTorch's float32 and against the Swift float32 row ("vs f32"),
and the pipeline's peak RSS per Swift run. An int8 bundle's linear layers multiply in int8 (activations quantized per
row) with AVX-512 VNNI, or AVX2's VPMADDWD on CPUs with AVX2 and no AVX-512; AMUSED_COMPUTE=f32 widens them to
float32.

--train-step adds one LoRA fine-tuning step at batch 1 (rank 16, alpha 32 on every to_q/to_k/to_v, every other token
masked; forward, cross-entropy, backward, AdamW): PEFT + torch autograd against `amused bench --part train-step`,
with both sides' peak memory (the Python side's is the process's, after loading the transformer and the step).

Besides the default build it times the same binary with AMUSED_GEMM=blas (OpenBLAS as pinned, and OpenBLAS choosing
its own kernels), unless --no-blas-rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu, vector_extensions  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def flops(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / ".fullsize/amused-256/model"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--pipeline", action="store_true",
                    help="also time a full 12-step guided text-to-image generation (diffusers vs amused generate)")
    ap.add_argument("--train-step", action="store_true", help="time one LoRA fine-tuning step instead")
    ap.add_argument("--bundles", default="", help="comma-separated presets to convert and time beside float32")
    ap.add_argument("--no-blas-rows", action="store_true",
                    help="skip the comparison rows (AMUSED_GEMM=blas; avx2 on AVX2-only CPUs): time the default "
                         "build only")
    args = ap.parse_args()
    model = Path(args.model)
    if not (model / "transformer").exists():
        sys.exit(f"{model} has no transformer/: run Tools/.venv/bin/python Tools/make_fullsize.py first")
    binary = REPO / ".build/release/amused"
    if not binary.exists():
        sys.exit("build the release binary first: swift build -c release")

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu()}; vector extensions: {vector_extensions()}")
    if args.train_step:
        bench_train_step(model, binary, args)
        return
    from diffusers import UVit2DModel, VQModel

    results = {}
    with torch.no_grad():
        t = UVit2DModel.from_pretrained(str(model / "transformer")).eval()
        c = t.config
        grid, b = c.sample_size, args.batch
        ids = (torch.arange(b * grid * grid) * 7919 % c.codebook_size).reshape(b, grid, grid)
        text = torch.sin(torch.arange(b * 77 * c.encoder_hidden_size, dtype=torch.float64)).float().reshape(b, 77, -1)
        pooled = torch.cos(torch.arange(b * c.cond_embed_dim, dtype=torch.float64)).float().reshape(b, -1)
        size = grid * 16
        micro = torch.tensor([[size, size, 0, 0, 6.0]] * b)

        def forward():
            t(ids, micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=text)

        results["transformer"] = {"torch": timed(forward, args.runs), "flops": flops(forward)}
        del t
        vq = VQModel.from_pretrained(str(model / "vqvae")).eval()
        vids = (torch.arange(16 * 16) * 7919 % vq.config.num_vq_embeddings).reshape(1, 16, 16)

        def decode():
            vq.decode(vids, force_not_quantize=True, shape=(1, 16, 16, vq.config.latent_channels))

        results["vq_decode"] = {"torch": timed(decode, args.runs), "flops": flops(decode)}
        del vq
        from transformers import CLIPTextModelWithProjection
        te = CLIPTextModelWithProjection.from_pretrained(str(model / "text_encoder")).eval()
        tids = (torch.arange(b * 77) * 7919 % te.config.vocab_size).reshape(b, 77)

        def encode():
            te(tids, output_hidden_states=True)

        results["text_encoder"] = {"torch": timed(encode, args.runs), "flops": flops(encode)}
        del te

    def swift_bench(env=None, path=model):
        return json.loads(subprocess.run([str(binary), "bench", str(path), "--batch", str(args.batch), "--runs",
                                          str(args.runs), "--json"], check=True, capture_output=True, text=True,
                                         env=env).stdout)

    swift = swift_bench()
    rows = [] if args.no_blas_rows else alternatives()
    others = [(label, swift_bench(env)) for label, env in rows]
    bundles = make_bundles(model, binary, [p for p in args.bundles.split(",") if p])
    others += [(f"  {preset} bundle", swift_bench(path=path)) for preset, path in bundles]
    print(f"model {model}, {args.threads} threads, torch {torch.__version__}, best of {args.runs} runs after a warm-up")
    print(f"Swift products: {swift['products']}")
    # The cores' float32 FMA peak, measured by the binary: what both sides' GFLOP/s are a fraction of.
    peak = float(swift.get("fma_peak_gflops_per_core", 0)) * args.threads
    print(f"peak float32 FMA, measured: {peak:.0f} GFLOP/s on {args.threads} cores" if peak else "peak: not measured")
    # Without VNNI the int8 bundles multiply with AVX2's VPMADDWD: its measured rate bounds how far they can gain.
    int16 = float(swift.get("int16_peak_gops_per_core", 0)) * args.threads
    if int16 and peak:
        print(f"peak int16 multiply-add (the AVX2 int8 path), measured: {int16:.0f} GOP/s on {args.threads} cores, "
              f"{int16 / peak:.2f}x the float32 peak")
    print(f"{'part':<38}{'PyTorch s':>11}{'Swift s':>10}{'ratio':>8}{'vs f32':>8}{'GFLOP':>9}{'torch GF/s':>12}"
          f"{'Swift GF/s':>12}{'Swift peak RSS':>16}{'torch/Swift of peak':>21}")
    for name, label in (("transformer", f"transformer forward, batch {args.batch}"), ("vq_decode", "VQ decode 256×256"),
                        ("text_encoder", f"text encoder, {args.batch} × 77 tokens")):
        tt = min(results[name]["torch"])
        gf = results[name]["flops"] / 1e9
        f32 = float(swift[name]["best_seconds"])
        for row_label, run in [(label, swift)] + others:
            st = float(run[name]["best_seconds"])
            share = f"{100 * gf / tt / peak:>10.0f}% / {100 * gf / st / peak:.0f}%" if peak else ""
            print(f"{row_label:<38}{tt:>11.2f}{st:>10.2f}{st / tt:>8.2f}{st / f32:>8.2f}{gf:>9.1f}{gf / tt:>12.1f}"
                  f"{gf / st:>12.1f}{run[name]['peak_rss_mib']:>12} MiB{share}")
    if args.pipeline:
        bench_pipeline(model, binary, args.threads, rows, bundles)


def make_bundles(model: Path, binary: Path, presets: list[str]) -> list[tuple[str, Path]]:
    """Converts `model` to each preset (kept between runs: a bundle is reused when it exists)."""
    out = Path("/tmp/amused-bench-bundles")
    out.mkdir(exist_ok=True)
    made = []
    for preset in presets:
        path = out / f"{model.parent.name}-{preset}.amused"
        if not path.exists():
            subprocess.run([str(binary), "convert", str(model), "--out", str(path), "--quantize", preset],
                           check=True, capture_output=True)
        made.append((preset, path))
    return made


def run_with_peak_rss(cmd: list[str], env=None) -> tuple[str, float]:
    """Runs cmd; returns its stderr and its own peak RSS in MiB, which the binary writes at exit (VmHWM) to the file
    AMUSED_PEAK_RSS_FILE names. (Not os.wait4's ru_maxrss: Linux carries the parent's high-water mark across fork and
    exec, so a child of this process — several GB after loading PyTorch's pipeline — would report at least that.)"""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".rss") as f:
        env = dict(env or os.environ, AMUSED_PEAK_RSS_FILE=f.name)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
        return r.stderr, float(Path(f.name).read_text().split()[0]) / 1024


def bench_train_step(model: Path, binary: Path, args) -> None:
    """One LoRA training step at batch 1, both sides on the same deterministic inputs. (PyTorch's peak RSS is this
    process's own ru_maxrss: nothing has been spawned yet when it is read.)"""
    import resource

    from diffusers import UVit2DModel
    from peft import LoraConfig

    t = UVit2DModel.from_pretrained(str(model / "transformer"))
    t.requires_grad_(False)
    t.add_adapter(LoraConfig(r=16, lora_alpha=32, target_modules=["to_q", "to_k", "to_v"]))
    t.train()
    c = t.config
    grid, b = c.sample_size, 1
    tokens = (torch.arange(b * grid * grid) * 7919 % c.codebook_size).reshape(b, grid * grid)
    masked = torch.arange(grid * grid) % 2 == 0
    ids = torch.where(masked, c.vocab_size - 1, tokens).reshape(b, grid, grid)
    labels = torch.where(masked, tokens, -100).reshape(-1)
    text = torch.sin(torch.arange(b * 77 * c.encoder_hidden_size, dtype=torch.float64)).float().reshape(b, 77, -1)
    pooled = torch.cos(torch.arange(b * c.cond_embed_dim, dtype=torch.float64)).float().reshape(b, -1)
    micro = torch.tensor([[grid * 16, grid * 16, 0, 0, 6.0]] * b)
    params = [p for p in t.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def step():
        logits = t(ids, micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=text)
        logits = logits.reshape(b, c.codebook_size, -1).permute(0, 2, 1).reshape(-1, c.codebook_size)
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    torch_times = timed(step, args.runs)
    torch_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del t, opt, params
    swift = json.loads(subprocess.run([str(binary), "bench", str(model), "--part", "train-step", "--batch", "1",
                                       "--runs", str(args.runs), "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    st, tt = float(swift["train_step"]["best_seconds"]), min(torch_times)
    print(f"model {model}, {args.threads} threads, torch {torch.__version__}, best of {args.runs} runs after a warm-up")
    print(f"Swift products: {swift['products']}")
    print(f"{'part':<38}{'PyTorch s':>11}{'Swift s':>10}{'ratio':>8}{'torch peak RSS':>16}{'Swift peak RSS':>16}")
    print(f"{'LoRA training step, batch 1, r 16':<38}{tt:>11.2f}{st:>10.2f}{st / tt:>8.2f}{torch_rss:>12.0f} MiB"
          f"{swift['train_step']['peak_rss_mib']:>12} MiB")


def bench_pipeline(model: Path, binary: Path, threads: int, rows: list[tuple[str, dict[str, str]]],
                   bundles: list[tuple[str, Path]]) -> None:
    """A whole 12-step, guidance-10 text-to-image generation at the model's size, seed 0: diffusers' AmusedPipeline
    against `amused generate` (each timed end to end after loading; the Swift figure is its own summary line)."""
    from diffusers import AmusedPipeline

    torch.set_num_threads(threads)
    pipe = AmusedPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    prompt = "a photo of a cat"
    t0 = time.perf_counter()
    with torch.no_grad():
        pipe(prompt, num_inference_steps=12, guidance_scale=10.0, generator=torch.Generator().manual_seed(0))
    torch_seconds = time.perf_counter() - t0
    del pipe
    def swift_generate(env=None, path=model):
        return run_with_peak_rss([str(binary), "generate", "--model", str(path), "--prompt", prompt, "--seed", "0",
                                  "--out", "/tmp/amused-bench.png"], env)

    f32 = report(torch_seconds, *swift_generate(), "12-step guided text-to-image")
    for label, env in rows:
        report(torch_seconds, *swift_generate(env), label, f32)
    for preset, path in bundles:
        report(torch_seconds, *swift_generate(path=path), f"  {preset} bundle", f32)


def alternatives() -> list[tuple[str, dict[str, str]]]:
    """The same Swift binary with BLAS doing the products instead of AmusedKit's AVX-512 SGEMM (AMUSED_GEMM=blas):
    once with OpenBLAS as the workplace pins it (OPENBLAS_CORETYPE=Haswell, since older OpenBLAS builds misbehave on
    some CPUs) and once with both OpenBLAS variables unset for that command alone, so OpenBLAS picks its own kernels
    as it would on a user's machine. On a CPU without AVX-512, where the default row already uses BLAS, the row is
    AmusedKit's AVX2 kernel instead (AMUSED_GEMM=avx2): the comparison that decides the default there."""
    flags = vector_extensions().split()
    if "avx512f" not in flags and {"avx2", "fma"} <= set(flags):
        rows = [("  AMUSED_GEMM=avx2, AmusedKit's AVX2 kernel", dict(os.environ, AMUSED_GEMM="avx2"))]
        if os.environ.get("OPENBLAS_CORETYPE"):
            auto = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            rows.append(("  OpenBLAS auto (default path)", auto))
        return rows
    blas = dict(os.environ, AMUSED_GEMM="blas")
    rows = [(f"  AMUSED_GEMM=blas, OpenBLAS {os.environ.get('OPENBLAS_CORETYPE', 'auto')}", blas)]
    if os.environ.get("OPENBLAS_CORETYPE"):
        auto = {k: v for k, v in blas.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        rows.append(("  AMUSED_GEMM=blas, OpenBLAS auto", auto))
    return rows


def report(torch_seconds: float, out: str, rss_mib: float, label: str, f32: tuple[float, float] | None = None
           ) -> tuple[float, float]:
    # "generated 1 image(s) 256×256 in T s: 12 steps at S s/step, text+VQ V s → …"; the load time is excluded by
    # taking steps × S + V.
    parts = out.split("steps at ")[1]
    per_step = float(parts.split(" s/step")[0])
    other = float(parts.split("text+VQ ")[1].split(" s")[0])
    swift_seconds = 12 * per_step + other
    base = f32 or (swift_seconds, rss_mib)
    print(f"{label:<38}{torch_seconds:>11.2f}{swift_seconds:>10.2f}{swift_seconds / torch_seconds:>8.2f}"
          f"{swift_seconds / base[0]:>8.2f}   (Swift: {per_step:.2f} s/step + {other:.2f} s text/VQ; peak RSS "
          f"{rss_mib:.0f} MiB, {rss_mib / base[1]:.2f}× float32's)")
    return swift_seconds, rss_mib


if __name__ == "__main__":
    main()
