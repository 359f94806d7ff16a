"""Reference records for LoRA training: train_amused.py's masked-token loss, every LoRA gradient from torch
autograd, and the adapters after 1 and 10 AdamW steps, on fixed tokens, masks and text (docs/finetune.md).

    Tools/.venv/bin/python Tools/lora_grad_records.py            # every model below
    Tools/.venv/bin/python Tools/lora_grad_records.py shapes-64  # one
    Tools/.venv/bin/python Tools/lora_grad_records.py --text-encoder tiny-256 tiny-512 shapes-64

For each model, PEFT adds LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v"]) to the transformer,
exactly as train_amused.py --use_lora does, but with init_lora_weights=False (B drawn too, so that A's gradients are
not zero at the first step). The batch: two token grids drawn at random, masked as train_amused.py masks (t ~ U(0,1),
mask_prob = cos(t·π/2), round(S·mask_prob) ≥ 1 positions through argsort of torch.rand), labels −100 elsewhere; the
text through the model's own CLIP (hidden_states[-2], text_embeds); micro-conditioning [res, res, 0, 0, 6]. Then
torch.optim.AdamW (train_amused.py's betas, eps and weight decay, a larger lr so ten steps move the adapters
visibly), one fresh mask per step. Written to Fixtures/records/<model>/finetune/ (finetune.json + .safetensors):

    init/<module>.lora_A.weight, init/<module>.lora_B.weight     the adapters before training
    grad/<module>.lora_A.weight, …                              the gradients of the first step's loss
    step1/<module>…, step10/<module>…                            the adapters after 1 and after 10 AdamW steps
    step{k}/input_ids [B,h,w] int64, step{k}/labels [B,h·w] int64, loss [10]
    encoder_hidden_states, pooled_text_emb, micro_conds

With --text-encoder (train_amused.py --train_text_encoder --text_encoder_use_lora, target modules q_proj, k_proj,
v_proj, the same r and alpha) the text encoder gets adapters too, the prompts are encoded inside every step with
gradients, and the record goes to finetune-text/: its adapters and gradients under init/text/, grad/text/, …, and
the prompts' ids as text_ids [B, 77] int64 (encoder_hidden_states and pooled_text_emb are the first step's).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amused_reference import REPO, VERSIONS, encode_prompts  # noqa: E402
from diffusers import AmusedPipeline  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)

MODELS = {
    # record folder: (model folder, prompts)
    "tiny-256": ("Fixtures/records/tiny-256/model", ["a photo of a cat", "an oil painting"]),
    "tiny-512": ("Fixtures/records/tiny-512/model", ["a photo of a cat", "an oil painting"]),
    "tiny-variant": ("Fixtures/records/tiny-variant/model", ["a photo of a cat", ""]),
    "shapes-64": ("Fixtures/models/shapes-64", ["a red circle on a blue background", "a green square"]),
    # Full size (Tools/make_fullsize.py): written under .fullsize/records, checked by `amused bench --part gradients`.
    "amused-256": (".fullsize/amused-256/model", ["a photo of a cat", "winter mountains"]),
}
RANK, ALPHA = 4, 8.0
# train_amused.py's AdamW settings (betas, eps, weight decay); lr 1e-3 instead of 3e-4 so that ten steps move the
# adapters well beyond rounding.
OPTIM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
STEPS = 10
BATCH = 2
SEED = 1234


def mask_batch(tokens: torch.Tensor, mask_id: int, gen: torch.Generator):
    """train_amused.py's masking, drawn from `gen` in its order: t, then the permutation."""
    batch, seq = tokens.shape
    t = torch.rand(batch, generator=gen)
    mask_prob = torch.cos(t * math.pi * 0.5).clip(0.0)
    n_masked = (seq * mask_prob).round().clamp(min=1)
    mask = torch.rand(batch, seq, generator=gen).argsort(dim=-1) < n_masked.unsqueeze(-1)
    return torch.where(mask, mask_id, tokens), torch.where(mask, tokens, -100)


def lora_state(model: torch.nn.Module, grad: bool = False) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "")
            out[key] = (p.grad if grad else p).detach().clone()
    return out


def record(name: str, text: bool = False) -> None:
    folder, prompts = MODELS[name]
    pipe = AmusedPipeline.from_pretrained(str(REPO / folder))
    transformer = pipe.transformer
    cfg = transformer.config
    torch.manual_seed(SEED)
    transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["to_q", "to_k", "to_v"],
                                       init_lora_weights=False))
    transformer.train()
    for n, p in transformer.named_parameters():
        p.requires_grad_("lora_" in n)
    text_encoder = pipe.text_encoder
    text_encoder.requires_grad_(False)
    if text:
        text_encoder.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["q_proj", "k_proj", "v_proj"],
                                            init_lora_weights=False))
        text_encoder.train()
        for n, p in text_encoder.named_parameters():
            p.requires_grad_("lora_" in n)
    with torch.no_grad():
        text_ids, hidden, pooled = encode_prompts(pipe, prompts)
    side = cfg.sample_size
    gen = torch.Generator().manual_seed(SEED + 1)
    tokens = torch.randint(0, cfg.codebook_size, (BATCH, side * side), generator=gen)
    res = side * 2 ** (len(pipe.vqvae.config.block_out_channels) - 1)
    micro = torch.tensor([[res, res, 0, 0, 6.0]] * BATCH)
    mask_id = cfg.vocab_size - 1
    # The masks come from their own generator, so that the Swift side can check it draws the same ones.
    mask_gen = torch.Generator().manual_seed(SEED + 2)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if text:
        params += [p for p in text_encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, **OPTIM)
    tensors: dict[str, torch.Tensor] = {"encoder_hidden_states": hidden, "pooled_text_emb": pooled,
                                        "micro_conds": micro}
    tensors.update({f"init/{k}": v for k, v in lora_state(transformer).items()})
    if text:
        tensors["text_ids"] = text_ids
        tensors.update({f"init/text/{k}": v for k, v in lora_state(text_encoder).items()})
    losses = []
    for step in range(1, STEPS + 1):
        ids, labels = mask_batch(tokens, mask_id, mask_gen)
        if text:
            out = text_encoder(text_ids, return_dict=True, output_hidden_states=True)
            hidden, pooled = out.hidden_states[-2], out.text_embeds
        logits = transformer(ids.reshape(BATCH, side, side), encoder_hidden_states=hidden, micro_conds=micro,
                             pooled_text_emb=pooled)
        logits = logits.reshape(BATCH, cfg.codebook_size, -1).permute(0, 2, 1).reshape(-1, cfg.codebook_size)
        loss = torch.nn.functional.cross_entropy(logits, labels.view(-1), ignore_index=-100, reduction="mean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 1:
            tensors.update({f"grad/{k}": v for k, v in lora_state(transformer, grad=True).items()})
            if text:
                tensors.update({f"grad/text/{k}": v for k, v in lora_state(text_encoder, grad=True).items()})
        opt.step()
        losses.append(loss.item())
        tensors[f"step{step}/input_ids"] = ids.reshape(BATCH, side, side).clone()
        tensors[f"step{step}/labels"] = labels.clone()
        if step in (1, STEPS):
            tensors.update({f"step{step}/{k}": v for k, v in lora_state(transformer).items()})
            if text:
                tensors.update({f"step{step}/text/{k}": v for k, v in lora_state(text_encoder).items()})
    tensors["loss"] = torch.tensor(losses, dtype=torch.float32)
    root = REPO / ".fullsize" / "records" if folder.startswith(".fullsize") else REPO / "Fixtures" / "records"
    out = root / name / ("finetune-text" if text else "finetune")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "finetune.safetensors"))
    meta = {
        "model_path": folder,
        "lora": {"r": RANK, "lora_alpha": ALPHA, "target_modules": ["to_q", "to_k", "to_v"],
                 "init_lora_weights": False},
        "text_encoder_lora": {"r": RANK, "lora_alpha": ALPHA, "target_modules": ["q_proj", "k_proj", "v_proj"],
                              "init_lora_weights": False} if text else None,
        "optimizer": {"name": "torch.optim.AdamW", "lr": OPTIM["lr"], "betas": list(OPTIM["betas"]),
                      "eps": OPTIM["eps"], "weight_decay": OPTIM["weight_decay"]},
        "steps": STEPS, "batch": BATCH, "seed": SEED, "mask_seed": SEED + 2, "prompts": prompts, "grid": side, "mask_id": mask_id,
        "losses": losses,
        "reference": {k: VERSIONS[k] for k in ("torch", "diffusers", "transformers", "peft")},
        "command": f"Tools/.venv/bin/python Tools/lora_grad_records.py {'--text-encoder ' if text else ''}{name}",
    }
    (out / "finetune.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: loss {losses[0]:.5f} → {losses[-1]:.5f}, {sum(1 for k in tensors if k.startswith('grad/'))} "
          f"gradients → {out.relative_to(REPO)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    text = "--text-encoder" in args
    names = [a for a in args if a != "--text-encoder"]
    for n in names or [m for m in MODELS if not MODELS[m][0].startswith(".fullsize")]:
        record(n, text=text)
