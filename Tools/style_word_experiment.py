"""Why the one-image style did not carry over on the earlier, filled-only default: an experiment in PyTorch
(docs/finetune.md, "On the earlier, filled-only default").

    Tools/.venv/bin/python Tools/style_word_experiment.py --lora [--ti] [--class-images 20] [--model DIR] [--out R.json]

Its committed results (docs/results/filled-default-style-word-*.json) were made on that default, which
`Tools/train_default.py --outlined-share 0` trains; --model defaults to the shipped default.

Trains train_amused.py's LoRA (rank 16, alpha 32, to_q/to_k/to_v, masked-token loss, AdamW) on the striped red
circle of Tools/style_eval.py with the 55 preservation prompts (the base model's own drawings, half of every batch of
4), 300 steps — the recipe of `amused finetune`, in torch — and optionally:

  --ti                also learns the style word's token embedding ("sks"; textual inversion, so LoRA + TI is
                      "pivotal tuning"): on the trained default the word otherwise moves the pooled text embedding by
                      under a tenth (hidden_states[-2] by 10–16%), whatever its embedding (the small CLIP only
                      learned the dataset's ~20 words)
  --class-images N    adds N preservation images of the training prompt without the word (DreamBooth's class prompt)

Then draws the style_eval grid (every other of its 50 prompts, seeds 0 and 1) with and without "in sks style", and
the training prompt itself 8 times with and without the word, and scores them with Tools/shapes.py.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import style_eval  # noqa: E402
from amused_reference import REPO, VERSIONS  # noqa: E402
from lora_grad_records import mask_batch  # noqa: E402  (train_amused.py's masking)
from train_default import encode_tokens  # noqa: E402
from diffusers import AmusedPipeline
from peft import LoraConfig
from PIL import Image
torch.set_num_threads(2)  # (after lora_grad_records' import, which sets 1)
ap = argparse.ArgumentParser()
ap.add_argument("--ti", action="store_true"); ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--ti-lr", type=float, default=5e-3)
ap.add_argument("--lora", action="store_true"); ap.add_argument("--class-images", type=int, default=0)
ap.add_argument("--style", default="striped", choices=sorted(style_eval.STYLES))
ap.add_argument("--model", default=str(REPO / "Fixtures" / "models" / "shapes-64"))
ap.add_argument("--out")
ap.add_argument("--images", help="write the two grids (with, without the word) here, as PREFIX-with.png / -without.png")
a = ap.parse_args()
if not (a.lora or a.ti):
    ap.error("train something: --lora, --ti or both")
M = a.model
pipe = AmusedPipeline.from_pretrained(M); pipe.set_progress_bar_config(disable=True)
tok, te, tr, vq = pipe.tokenizer, pipe.text_encoder, pipe.transformer, pipe.vqvae
PROMPT = "a red circle on a white background in sks style"
def ids_of(texts):
    return tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
img = style_eval.training_image(a.style)
views = [encode_tokens(vq, view[None]).reshape(-1) for view in (img, img[:, ::-1].copy())]
# preservation: the base model's own drawings of the 55 prompts (+ class images of the prompt without the word)
pres = [l.rstrip("\n") for l in open(REPO / "Fixtures" / "finetune" / "preserve-prompts.txt")]
pres += ["a red circle on a white background"] * a.class_images  # (CLASS)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    lat = []
    for i in range(0, len(pres), 16):
        lat.append(pipe(pres[i:i + 16], num_inference_steps=12, guidance_scale=2.0, generator=g,
                        output_type="latent").images)
pres_tokens = torch.cat([l.reshape(l.shape[0], -1) for l in lat])
print("preservation tokens", pres_tokens.shape, flush=True)
sks = ids_of([PROMPT])[0][9].item()
E = te.text_model.embeddings.token_embedding.weight


def moved(texts: list[str]) -> list[dict]:
    """How far each text moves the text encoder's outputs from the first one's (relative L2 distance)."""
    with torch.no_grad():
        o = te(ids_of(texts), output_hidden_states=True)
    p, h = o.text_embeds, o.hidden_states[-2]
    return [{"text": t, "pooled": round(((p[i] - p[0]).norm() / p[0].norm()).item(), 4),
             "hidden_states[-2]": round(((h[i] - h[0]).norm() / h[0].norm()).item(), 4)} for i, t in enumerate(texts)]


# Before training: what the word does to the trained default's text encoder, against changing a word it knows, and
# with the word's embedding replaced by a random vector of growing norm (a trained word's is about 0.3).
CLASS = "a red circle on a white background"
probe = {"untrained": moved([CLASS, PROMPT, CLASS + ", sks", "a blue circle on a white background",
                             "a red square on a white background"])}
original = E[sks].detach().clone()
direction = torch.randn(E.shape[1], generator=torch.Generator().manual_seed(0))
for norm in (0.1, 0.3, 1.0, 3.0, 10.0):
    with torch.no_grad():
        E[sks] = direction / direction.norm() * norm
    probe[f"random embedding of norm {norm}"] = moved([CLASS, PROMPT])[1]
with torch.no_grad():
    E[sks] = original
params = []
if a.lora:
    torch.manual_seed(0)
    tr.add_adapter(LoraConfig(r=16, lora_alpha=32, target_modules=["to_q", "to_k", "to_v"]))
for n, p in tr.named_parameters(): p.requires_grad_("lora_" in n)
params += [p for p in tr.parameters() if p.requires_grad]
te.requires_grad_(False)
groups = [{"params": params, "lr": a.lr, "weight_decay": 0.01}] if params else []
if a.ti:
    E.requires_grad_(True)
    groups.append({"params": [E], "lr": a.ti_lr, "weight_decay": 0.0})
opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
orig = E.detach().clone()
mask_id = tr.config.vocab_size - 1
micro = torch.tensor([[64, 64, 0, 0, 6.0]] * 4)
gen = torch.Generator().manual_seed(1)
tr.train()
for step in range(a.steps):
    j = torch.randint(0, len(pres), (2,), generator=gen)
    texts = [PROMPT, PROMPT] + [pres[k] for k in j]
    toks = torch.stack([views[0], views[1], pres_tokens[j[0]], pres_tokens[j[1]]])
    inp, lab = mask_batch(toks, mask_id, gen)
    out = te(ids_of(texts), output_hidden_states=True)
    logits = tr(inp.reshape(4, 16, 16), encoder_hidden_states=out.hidden_states[-2], micro_conds=micro,
                pooled_text_emb=out.text_embeds)
    codes = logits.shape[1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(4, codes, -1).permute(0, 2, 1).reshape(-1, codes),
                                             lab.reshape(-1), ignore_index=-100)
    opt.zero_grad(); loss.backward()
    if a.ti:
        keep = torch.zeros_like(E.grad[:, :1]); keep[sks] = 1; E.grad *= keep
    opt.step()
    if a.ti:
        with torch.no_grad(): E[:] = torch.where(keep.bool(), E, orig)
    if step % 50 == 0: print(step, round(loss.item(), 4), "sks norm", round(E[sks].norm().item(), 3), flush=True)
tr.eval()
with torch.no_grad():
    after = moved([CLASS, PROMPT])[1]
items = style_eval.prompts()[::2]
res = {}
for mode in ("with", "without"):
    texts = [it["text"] + (" in sks style" if mode == "with" else "") for it in items]
    ims = []
    for seed in (0, 1):
        with torch.no_grad():
            ims.append((pipe(texts, num_inference_steps=12, guidance_scale=2.0,
                             generator=torch.Generator().manual_seed(seed), output_type="np").images * 255
                        ).round().astype(np.uint8))
    ims = np.concatenate(ims)
    res[mode] = style_eval.score(ims, items + items, a.style)[0]
    if a.images:
        grid = np.concatenate([np.concatenate(list(ims[r * 12:(r + 1) * 12]), 1) for r in range(4)], 0)
        Image.fromarray(grid).resize((1536, 512), Image.NEAREST).save(f"{a.images}-{mode}.png")
with torch.no_grad():
    tp = (pipe([PROMPT] * 8 + [CLASS] * 8, num_inference_steps=12, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(5), output_type="np").images * 255).round().astype(np.uint8)
res["train prompt with/without"] = [style_eval.style_scores(tp[:8], a.style), style_eval.style_scores(tp[8:], a.style)]
result = {"options": vars(a), "prompts": len(items), "seeds": [0, 1],
          "text_encoder_probe_before_training": probe, "word_moves_text_encoder_after_training": after,
          "style_word_embedding_norm": round(E[sks].norm().item(), 4), "results": res,
          "reference": {k: VERSIONS[k] for k in ("torch", "diffusers", "peft")}}
print(json.dumps(result, indent=1))
if a.out:
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
