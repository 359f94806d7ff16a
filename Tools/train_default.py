#!/usr/bin/env python3
"""Trains AmusedKit's default model, a small aMUSEd that draws coloured shapes, the way the paper trains the big
one: a VQ autoencoder first, then the U-ViT by masked token modelling (cosine masking schedule, the pipeline's
micro-conditioning, ~10% empty captions for classifier-free guidance) together with a small CLIP text encoder
that reads the real CLIP tokenizer's ids. CPU only, fixed seeds, one command:

    Tools/.venv/bin/python Tools/train_default.py --out Fixtures/models/shapes-64

It writes the pipeline with save_pretrained in the released layout (diffusers' AmusedPipeline.from_pretrained
loads it unchanged), plus training/: the loss logs (loss-vq.tsv, loss-transformer.tsv), their plot (losses.png)
and what the VQ reaches on held-out images (vq-eval.json). The data is Tools/shapes.py.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402
from machine import cpu  # noqa: E402
from amused_reference import VERSIONS, clip_tokenizer, save_pipeline  # noqa: E402
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModelWithProjection  # noqa: E402

# The recommended sampling settings, recorded beside the weights (model_index.json "_amused_defaults"; keys with a
# leading underscore are ignored by diffusers) so that `amused generate` and bundles use them by default.
DEFAULTS = {"steps": 12, "guidance": 2.0}
MICRO_CONDS = [shapes.SIZE, shapes.SIZE, 0, 0, 6.0]  # width, height, crop top, crop left, aesthetic: as the pipeline


def text_config() -> CLIPTextConfig:
    # Hidden 32: the 49,408-row token table (the real CLIP vocabulary) dominates the file; 32 wide it is 6.3 MB.
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,  # legacy ids, as in the released config
    )


def vq_config() -> dict:
    # Scale factor 4 (three levels): 64×64 images become 16×16 tokens of 4×4 pixels.
    return dict(
        act_fn="silu", block_out_channels=[16, 32, 64], down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3, in_channels=3, out_channels=3, latent_channels=16,
        layers_per_block=1, lookup_from_codebook=True, mid_block_add_attention=False, norm_num_groups=8,
        norm_type="group", num_vq_embeddings=256, vq_embed_dim=16, sample_size=shapes.SIZE, force_upcast=True,
    )


def transformer_config(vq: dict, text: CLIPTextConfig, downsample: bool = True) -> dict:
    # downsample/upsample on: the amused-512 layout, where every block runs on a grid of half the tokens' resolution
    # (8×8 here); off: amused-256's, on the tokens' own 16×16 grid.
    codes = vq["num_vq_embeddings"]
    return dict(
        hidden_size=128, use_bias=False, hidden_dropout=0.0, cond_embed_dim=text.projection_dim,
        micro_cond_encode_dim=16, micro_cond_embed_dim=80, encoder_hidden_size=text.hidden_size,
        vocab_size=codes + 1, codebook_size=codes, in_channels=64, block_out_channels=128, num_res_blocks=4,
        downsample=downsample, upsample=downsample, block_num_heads=4, num_hidden_layers=3, num_attention_heads=4,
        attention_dropout=0.0, intermediate_size=256, layer_norm_eps=1e-6, ln_elementwise_affine=True,
        sample_size=shapes.SIZE // 4,
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [0, 1] (the VQ works in [0, 1], like train_amused.py's ToTensor)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a, b)))


# ---------------------------------------------------------------------------------------------------------------
# 1. The VQ autoencoder: reconstruction (L1 + MSE) + the quantizer's codebook and commitment loss, on whole 64×64
#    images (GroupNorm statistics of a crop of flat colour would differ from the image's). It starts as a plain
#    autoencoder (the straight-through quantizer makes an untrained decoder learn slowly), then the codebook is
#    initialised by k-means on the encoder's outputs and training goes on through the quantizer. Codes unused over
#    a window are restarted on encoder outputs of the current batch.

def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iterations: int = 20) -> torch.Tensor:
    centres = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = x[assign == j]
            centres[j] = members.mean(0) if len(members) else x[torch.randint(0, x.shape[0], (1,), generator=gen)][0]
    return centres


def train_vq(args, log: Path) -> VQModel:
    torch.manual_seed(args.seed)
    vq = VQModel(**vq_config())
    pool, _, _ = shapes.dataset(args.seed + 1, args.vq_images)
    gen = torch.Generator().manual_seed(args.seed + 2)
    opt = torch.optim.AdamW(vq.parameters(), lr=args.vq_lr, weight_decay=0.0)
    codes = vq.config.num_vq_embeddings
    used = torch.zeros(codes, dtype=torch.long)
    plain = int(args.vq_steps * 0.3)
    start = time.time()
    with open(log, "w") as f:
        f.write("step\tloss\trecon\tcommit\tcodes_used\tseconds\n")
        for step in range(args.vq_steps):
            idx = torch.randint(0, len(pool), (args.vq_batch,), generator=gen)
            x = to_tensor(pool[idx.numpy()])
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.vq_steps, args.vq_lr, 50)
            h = vq.encode(x).latents
            if step == plain:
                with torch.no_grad():
                    sample = torch.cat([vq.encode(to_tensor(pool[i:i + 64])).latents for i in range(0, 512, 64)])
                    flat = sample.permute(0, 2, 3, 1).reshape(-1, sample.shape[1])
                    vq.quantize.embedding.weight.copy_(kmeans(flat, codes, gen))
            if step < plain:
                zq, commit, ids = h, torch.zeros(()), None
            else:
                zq, commit, (_, _, ids) = vq.quantize(h)
            out = vq.decoder(vq.post_quant_conv(zq))  # decode() would read zq as token ids (lookup_from_codebook)
            recon = F.l1_loss(out, x) + F.mse_loss(out, x)
            loss = recon + commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ids is not None:
                used += torch.bincount(ids.flatten(), minlength=codes)
            if (step + 1) % 25 == 0:
                dead = (used == 0).nonzero().flatten()
                if ids is not None and len(dead) and step + 1 < args.vq_steps * 0.8:
                    flat = h.detach().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
                    pick = torch.randint(0, flat.shape[0], (len(dead),), generator=gen)
                    with torch.no_grad():
                        vq.quantize.embedding.weight[dead] = flat[pick]
                n_used = int((used > 0).sum())
                used.zero_()
                f.write(f"{step + 1}\t{loss.item():.5f}\t{recon.item():.5f}\t{commit.item():.5f}\t{n_used}\t"
                        f"{time.time() - start:.0f}\n")
                f.flush()
                print(f"vq {step + 1}/{args.vq_steps} loss {loss.item():.4f} codes {n_used} "
                      f"{time.time() - start:.0f}s", flush=True)
    return vq.eval()


@torch.no_grad()
def encode_tokens(vq: VQModel, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        h = vq.encode(to_tensor(images[i:i + batch])).latents
        out.append(vq.quantize(h)[2][2].reshape(-1, h.shape[2], h.shape[3]))
    return torch.cat(out)


@torch.no_grad()
def reconstruct(vq: VQModel, images: np.ndarray) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """The VQ's reconstructions of `images` (float in [0, 1] and uint8), and their token ids."""
    ids = encode_tokens(vq, images)
    b, h, w = ids.shape
    recon = vq.decode(ids, force_not_quantize=True, shape=(b, h, w, vq.config.vq_embed_dim)).sample.clamp(0, 1)
    return recon, (recon.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), ids


@torch.no_grad()
def evaluate_vq(vq: VQModel, seed: int) -> dict:
    """PSNR and checker accuracy of reconstructions of images the VQ never saw (held-out pairs included)."""
    images, _, attrs = shapes.dataset(seed, 300, allow_held_out=True)
    recon, pixels, ids = reconstruct(vq, images)
    hits = {"colour": 0, "background": 0, "shape": 0}
    for img, a in zip(pixels, attrs):
        r = shapes.classify(img)
        for k in hits:
            hits[k] += r[k] == a[k]
    return {"images": len(images), "psnr_db": round(psnr(recon, to_tensor(images)), 2),
            **{f"{k}_accuracy": round(v / len(images), 4) for k, v in hits.items()},
            "codes_used": int(torch.unique(ids).numel())}


@torch.no_grad()
def evaluate_vq_outlined(vq: VQModel, seed: int) -> dict:
    """PSNR of reconstructions of outlined shapes the VQ never saw, and the share the outline checker still reads
    as outlined (the renders themselves: all)."""
    share = shapes.P_OUTLINED
    shapes.P_OUTLINED = 1.0
    try:
        images, _, _ = shapes.dataset(seed, 300, allow_held_out=True)
    finally:
        shapes.P_OUTLINED = share
    recon, pixels, _ = reconstruct(vq, images)
    hollow = [shapes.hollowness(img) > shapes.OUTLINED_THRESHOLD for img in pixels]
    return {"images": len(images), "psnr_db": round(psnr(recon, to_tensor(images)), 2),
            "outlined_accuracy": round(sum(hollow) / len(images), 4)}


# ---------------------------------------------------------------------------------------------------------------
# 2. The transformer and the text encoder, by masked token modelling (train_amused.py's objective, spec'd in
#    docs/model-notes.md): t ~ U(0,1), mask_prob = cos(t·π/2), round(S·mask_prob) ≥ 1 positions masked through a
#    random permutation, cross-entropy on the masked positions only.

def train_transformer(args, vq: VQModel, tok, log: Path):
    torch.manual_seed(args.seed + 10)
    text = text_config()
    tcfg = transformer_config(dict(vq.config), text, args.downsample)
    transformer = UVit2DModel(**tcfg)
    text_encoder = CLIPTextModelWithProjection(text)
    images, texts, _ = shapes.dataset(args.seed + 3, args.images)
    t0 = time.time()
    tokens = encode_tokens(vq, images)
    print(f"tokens for {len(images)} images in {time.time() - t0:.0f}s", flush=True)
    del images
    text_ids = tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    mask_id = tcfg["vocab_size"] - 1
    seq = tokens.shape[1] * tokens.shape[2]
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 11)
    micro = torch.tensor([MICRO_CONDS], dtype=torch.float32).repeat(args.batch, 1)
    start = time.time()
    transformer.train()
    text_encoder.train()
    with open(log, "w") as f:
        f.write("step\tloss\taccuracy\tlr\tseconds\n")
        for step in range(args.steps):
            idx = torch.randint(0, len(tokens), (args.batch,), generator=gen)
            ids = tokens[idx].reshape(args.batch, seq)
            t = torch.rand(args.batch, generator=gen)
            n_masked = (seq * torch.cos(t * math.pi * 0.5)).round().clamp(min=1)
            mask = torch.rand(args.batch, seq, generator=gen).argsort(dim=-1) < n_masked[:, None]
            inputs = torch.where(mask, torch.full_like(ids, mask_id), ids).reshape_as(tokens[idx])
            labels = torch.where(mask, ids, torch.full_like(ids, -100))
            out = text_encoder(text_ids[idx], return_dict=True, output_hidden_states=True)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.steps, args.lr, 100)
            logits = transformer(inputs, out.hidden_states[-2], out.text_embeds, micro)
            logits = logits.reshape(args.batch, tcfg["codebook_size"], seq).permute(0, 2, 1)
            loss = F.cross_entropy(logits.reshape(-1, tcfg["codebook_size"]), labels.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if (step + 1) % 20 == 0:
                with torch.no_grad():
                    acc = float((logits.argmax(-1)[mask] == ids[mask]).float().mean())
                f.write(f"{step + 1}\t{loss.item():.5f}\t{acc:.4f}\t{opt.param_groups[0]['lr']:.6f}\t"
                        f"{time.time() - start:.0f}\n")
                f.flush()
                print(f"transformer {step + 1}/{args.steps} loss {loss.item():.4f} acc {acc:.3f} "
                      f"{time.time() - start:.0f}s", flush=True)
    return transformer.eval(), text_encoder.eval(), mask_id


# ---------------------------------------------------------------------------------------------------------------
# The loss plot, drawn with Pillow (no plotting library in the pinned requirements).

def plot(logs: list[tuple[str, Path, str]], out: Path) -> None:
    from PIL import Image, ImageDraw
    w, h, pad = 460, 260, 40
    canvas = Image.new("RGB", (w * len(logs), h), "white")
    d = ImageDraw.Draw(canvas)
    for k, (title, path, column) in enumerate(logs):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        if len(rows) < 3:
            continue
        col = rows[0].index(column)
        xs = np.array([float(r[0]) for r in rows[1:]])
        ys = np.array([float(r[col]) for r in rows[1:]])
        x0 = k * w
        lo, hi = float(ys.min()), float(ys.max())
        hi = hi if hi > lo else lo + 1
        pts = [(x0 + pad + (x - xs[0]) / max(1, xs[-1] - xs[0]) * (w - 2 * pad),
                h - pad - (y - lo) / (hi - lo) * (h - 2 * pad)) for x, y in zip(xs, ys)]
        d.rectangle([x0 + pad, pad, x0 + w - pad, h - pad], outline=(180, 180, 180))
        d.line(pts, fill=(30, 70, 230), width=2)
        d.text((x0 + pad, 10), f"{title}: {column} (steps {int(xs[0])}-{int(xs[-1])})", fill="black")
        d.text((x0 + 4, pad - 6), f"{hi:.3g}", fill="black")
        d.text((x0 + 4, h - pad - 6), f"{lo:.3g}", fill="black")
    canvas.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (the pipeline, plus training/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vq-steps", type=int, default=1000)
    ap.add_argument("--vq-batch", type=int, default=16)
    ap.add_argument("--vq-lr", type=float, default=2e-3)
    ap.add_argument("--vq-images", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--images", type=int, default=24000)
    ap.add_argument("--vq-from", help="reuse the VQ of an earlier run's folder instead of training one")
    ap.add_argument("--object-sizes", type=float, nargs=2, default=list(shapes.SIZES), metavar=("LO", "HI"),
                    help="the object's side as a fraction of the image (experiments; docs/trained-default.md)")
    ap.add_argument("--downsample", action=argparse.BooleanOptionalAction, default=True,
                    help="run the U-ViT's blocks at half the token grid (amused-512's layout) or not (amused-256's)")
    ap.add_argument("--grid", type=int, default=shapes.GRID,
                    help="put the object's box on multiples of N pixels (0: anywhere; default: the 4-pixel token cells)")
    ap.add_argument("--outlined-share", type=float, default=0.3,
                    help="draw this share of the transformer's images outlined, named in the captions (\"… in "
                         "outlined style\"), so that the model knows a style word changes how a shape is drawn "
                         "(docs/finetune.md); 0 gives the earlier filled-only default")
    args = ap.parse_args()
    shapes.SIZES, shapes.GRID = tuple(args.object_sizes), args.grid
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    logs = out / "training"
    logs.mkdir(parents=True, exist_ok=True)
    began = time.time()
    if args.vq_from:
        vq = VQModel.from_pretrained(Path(args.vq_from) / "vqvae").eval()
        # from_pretrained notes where it read from; drop that so the saved config is the one command's, byte for byte.
        vq._internal_dict = type(vq.config)({k: v for k, v in vq.config.items() if k != "_name_or_path"})
        earlier_log = Path(args.vq_from) / "training" / "loss-vq.tsv"
        if earlier_log.exists():  # the VQ's own loss curve travels with it (and into losses.png)
            shutil.copyfile(earlier_log, logs / "loss-vq.tsv")
    else:
        # The transformer learns the tokens of the VQ as it is saved and shipped, float16-rounded (below), not of
        # the float32 weights training ended with: the two encode a few tokens differently, and with the rounding
        # here the one command and `--vq-from` its own output train the same transformer, bit for bit.
        vq = train_vq(args, logs / "loss-vq.tsv").half().float()
    vq_eval = evaluate_vq(vq, args.seed + 100)
    print("vq held-out:", vq_eval, flush=True)
    (logs / "vq-eval.json").write_text(json.dumps(vq_eval, indent=1) + "\n")
    for p in vq.parameters():
        p.requires_grad_(False)
    # The style share applies to the transformer's images only: the VQ above learned (and was measured on) filled
    # shapes, so the one command from scratch still trains the shipped VQ (byte for byte on the CPU kind that made it),
    # and a stroke is a pair of edges it already reconstructs (vq-eval.json's "outlined" entry measures it).
    shapes.P_OUTLINED = args.outlined_share
    if args.outlined_share:
        vq_eval["outlined"] = evaluate_vq_outlined(vq, args.seed + 100)
        print("vq held-out, outlined:", vq_eval["outlined"], flush=True)
        (logs / "vq-eval.json").write_text(json.dumps(vq_eval, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as scratch:
        tok = clip_tokenizer(Path(scratch))
        transformer, text_encoder, mask_id = train_transformer(args, vq, tok, logs / "loss-transformer.tsv")
        scheduler = AmusedScheduler(mask_token_id=mask_id, masking_schedule="cosine")
        # Stored as float16, as the released fp16 variants are, to keep the committed files within 20 MB (in float32
        # they would be 27 MB); diffusers' and transformers' from_pretrained load them as float32.
        pipe = AmusedPipeline(vqvae=vq.half(), tokenizer=tok, text_encoder=text_encoder.half(),
                              transformer=transformer.half(), scheduler=scheduler)
        save_pipeline(pipe, out)
    index = json.loads((out / "model_index.json").read_text())
    index["_amused_defaults"] = DEFAULTS
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    minutes = (time.time() - began) / 60
    provenance = {"command": " ".join(["Tools/train_default.py"] + sys.argv[1:]), "versions": VERSIONS,
                  "threads": args.threads, "cpu": cpu(), "minutes": round(minutes, 1), "args": vars(args)}
    (logs / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    plots = [("transformer", logs / "loss-transformer.tsv", "loss")]
    if (logs / "loss-vq.tsv").exists():
        plots.insert(0, ("VQ", logs / "loss-vq.tsv", "loss"))
    plot(plots, logs / "losses.png")
    print(f"done in {minutes:.1f} min", flush=True)


if __name__ == "__main__":
    main()
