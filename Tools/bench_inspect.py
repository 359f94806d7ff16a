#!/usr/bin/env python3
"""Benchmark (not a test): `amused inspect` of the full-size amused-256 transformer (2.4 GB) must finish in well
under a second with peak memory under 64 MiB, because it reads only the header.

    swift build -c release && python3 Tools/bench_inspect.py [.fullsize/amused-256/model/transformer/diffusion_pytorch_model.safetensors]
"""
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    REPO, ".fullsize/amused-256/model/transformer/diffusion_pytorch_model.safetensors")
binary = os.path.join(REPO, ".build/release/amused")
if not os.path.exists(target):
    sys.exit(f"{target} is missing: run Tools/.venv/bin/python Tools/make_fullsize.py first")
runs = []
for _ in range(5):
    t0 = time.perf_counter()
    subprocess.run([binary, "inspect", target], check=True, stdout=subprocess.DEVNULL)
    runs.append(time.perf_counter() - t0)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
size = os.path.getsize(target)
print(f"inspect {os.path.relpath(target, REPO)} ({size / 1e9:.2f} GB): best {min(runs) * 1000:.1f} ms, "
      f"median {sorted(runs)[2] * 1000:.1f} ms over 5 runs; peak RSS {peak_kib / 1024:.1f} MiB")
ok = min(runs) < 1.0 and peak_kib < 64 * 1024
print("target (< 1 s, < 64 MiB):", "met" if ok else "MISSED")
sys.exit(0 if ok else 1)
