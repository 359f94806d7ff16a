"""A pipeline record for the full-size random checkpoint: one guided 12-step text-to-image case made by diffusers
0.35.2 on the CPU, so that bundles of the full-size model can be judged end to end (quantized against float32).

    Tools/.venv/bin/python Tools/fullsize_pipeline_record.py [--res 256] [--out .fullsize]

Writes <out>/amused-<res>-pipeline/record.json + record.safetensors (model: ../amused-<res>/model). About 80 s at
256 on two cores. Never committed (the checkpoint it describes is generated locally by Tools/make_fullsize.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from diffusers import AmusedPipeline

sys.path.insert(0, str(Path(__file__).parent))
from amused_reference import RecordWriter  # noqa: E402
from make_fixtures import run_pipeline_case  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=256, choices=[256, 512])
    ap.add_argument("--out", default=".fullsize")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    model = out / f"amused-{args.res}" / "model"
    pipe = AmusedPipeline.from_pretrained(str(model), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    folder = out / f"amused-{args.res}-pipeline"
    rec = RecordWriter(folder, model=f"../amused-{args.res}/model")
    t0 = time.time()
    run_pipeline_case(rec, "text_to_image", pipe, "t2i_b1_cfg", prompts=["a photo of a cat"], negative_prompts=None,
                      seed=0, steps=12, guidance_scale=10.0, temperature=[2.0, 0.0], height=args.res, width=args.res,
                      aesthetic_score=6.0, crop_coord=[0, 0])
    rec.write()
    print(f"wrote {folder} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
