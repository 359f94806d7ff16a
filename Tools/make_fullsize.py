#!/usr/bin/env python3
"""Writes full-size aMUSEd checkpoints with random weights, in the released layout, for benchmarks and
real-shape checks. Never committed (about 7 GB per resolution with the fp16 variants).

    Tools/.venv/bin/python Tools/make_fullsize.py [--out .fullsize] [--only 256|512] [--no-record]
    Tools/.venv/bin/python Tools/make_fullsize.py --open-muse [--only 256|512]   # + amused-{res}/openmuse

For each of amused-256 and amused-512: <out>/amused-<res>/model/ is what AmusedPipeline.save_pretrained writes
(model_index.json, transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/) with the exact released configs
(docs/model-notes.md §1), fp32 weights plus the *.fp16.safetensors variants, and
<out>/amused-<res>/record.json + record.safetensors holds a transformer case and a VQ decode case.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amused_reference import (  # noqa: E402
    REPO, RecordWriter, build_pipeline, clip_tokenizer, encode_prompts, save_pipeline,
)
from transformers import CLIPTextConfig  # noqa: E402

SEED = 7


def released_transformer_config(res: int) -> dict:
    big = res == 512
    return dict(
        attention_dropout=0.0, block_num_heads=12, block_out_channels=768, codebook_size=8192, cond_embed_dim=768,
        downsample=big, encoder_hidden_size=768, hidden_dropout=0.0, hidden_size=1024, in_channels=768,
        intermediate_size=2816, layer_norm_eps=1e-06, ln_elementwise_affine=True, micro_cond_embed_dim=1280,
        micro_cond_encode_dim=256, num_attention_heads=16, num_hidden_layers=22, num_res_blocks=3,
        sample_size=32 if big else 16, upsample=big, use_bias=False, vocab_size=8256,
    )


def released_vq_config() -> dict:
    return dict(
        act_fn="silu", block_out_channels=[128, 256, 256, 512, 768], down_block_types=["DownEncoderBlock2D"] * 5,
        up_block_types=["UpDecoderBlock2D"] * 5, in_channels=3, out_channels=3, latent_channels=64,
        layers_per_block=2, lookup_from_codebook=True, mid_block_add_attention=False, norm_num_groups=32,
        norm_type="group", num_vq_embeddings=8192, sample_size=32, scaling_factor=0.18215, vq_embed_dim=None,
        force_upcast=True,
    )


def released_text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        attention_dropout=0.0, dropout=0.0, initializer_factor=1.0, initializer_range=0.02,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / ".fullsize"))
    ap.add_argument("--only", choices=["256", "512"])
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--open-muse", action="store_true",
                    help="only write amused-{res}/openmuse: the saved model in open-muse naming (needs the model)")
    args = ap.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as scratch:
        tok = clip_tokenizer(Path(scratch))
    if args.open_muse:
        from diffusers import AmusedPipeline
        from make_fixtures import write_open_muse_fixture
        for res in (256, 512):
            if args.only and int(args.only) != res:
                continue
            t0 = time.time()
            folder = out / f"amused-{res}"
            pipe = AmusedPipeline.from_pretrained(str(folder / "model"))
            write_open_muse_fixture(folder / "openmuse", pipe, tok)
            print(f"amused-{res}: open-muse checkpoint written in {time.time() - t0:.1f} s", flush=True)
        return
    for res in (256, 512):
        if args.only and int(args.only) != res:
            continue
        t0 = time.time()
        pipe = build_pipeline(released_transformer_config(res), released_vq_config(), released_text_config(), tok,
                              SEED + res, transformer_gains={"mlm_layer.conv2": 4.0},
                              vq_gains={"decoder.conv_out.weight": 0.25, "decoder.conv_out.bias": 0.5})
        folder = out / f"amused-{res}"
        save_pipeline(pipe, folder / "model", variant_fp16=True)
        t1 = time.time()
        print(f"amused-{res}: built and saved in {t1 - t0:.1f} s", flush=True)
        if args.no_record:
            continue
        rec = RecordWriter(folder)
        grid = res // 16
        gen = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            ids = torch.randint(0, 8192, (1, grid, grid), generator=gen)
            ids[torch.rand((1, grid, grid), generator=gen) < 0.5] = 8255
            _, hidden, embeds = encode_prompts(pipe, ["a photo of a cat"])
            micro = torch.tensor([[res, res, 0, 0, 6.0]])
            logits = pipe.transformer(ids, micro_conds=micro, pooled_text_emb=embeds, encoder_hidden_states=hidden)
            rec.add("transformer_b1", "transformer", {"input_ids": ids, "encoder_hidden_states": hidden,
                                                     "pooled_text_emb": embeds, "micro_conds": micro,
                                                     "logits": logits})
            ids = torch.randint(0, 8192, (1, grid, grid), generator=gen)
            image = pipe.vqvae.decode(ids, force_not_quantize=True, shape=(1, grid, grid, 64)).sample.clip(0, 1)
            rec.add("vq_decode_b1", "vq_decode", {"ids": ids, "image": image})
        rec.write()
        print(f"amused-{res}: record written in {time.time() - t1:.1f} s", flush=True)


if __name__ == "__main__":
    main()
