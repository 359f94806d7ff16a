#!/usr/bin/env python3
"""Layer bisection, PyTorch side: runs the component cases of a reference record through diffusers/transformers
with forward hooks and writes the same named activations that `amused verify --trace DIR` writes, in the same
layouts, to DIR/<case>.torch.safetensors. Then `amused verify --reference RECORD --trace DIR` prints the first
layer at which Swift and PyTorch diverge.

    Tools/.venv/bin/python Tools/trace_reference.py RECORD --out DIR [--model MODEL] [--case NAME]

Names and layouts (Swift keeps UVit activations in NHWC):
  text encoder: text_model.embeddings, text_model.encoder.layers.<i> [B,L,D]; text_embeds [B,P]
  transformer:  encoder_proj_layer_norm [B,L,H]; cond_embed [B,H]; embed, {down,up}_block.{downsample,
                res_blocks.<i>, attention_blocks.<i>, upsample} [B,h,w,C]; transformer_layers.<i> [B,S,H];
                mlm_layer [B,h,w,codebook]
  VQ:           encoder.down_blocks.<i>, latents, decoder.mid_block, decoder.up_blocks.<i> [B,C,h,w]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from diffusers import UVit2DModel, VQModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextModelWithProjection  # noqa: E402


def nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1) if t.ndim == 4 else t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("record")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model")
    ap.add_argument("--case")
    args = ap.parse_args()
    record = Path(args.record)
    meta = json.loads((record / "record.json").read_text())
    model = Path(args.model) if args.model else record / meta.get("model", "model")
    tensors = load_file(str(record / "record.safetensors"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded: dict[str, torch.nn.Module] = {}

    def component(name, cls):
        if name not in loaded:
            loaded[name] = cls.from_pretrained(str(model / name)).eval()
        return loaded[name]

    for case in meta["cases"]:
        if args.case and case["name"] != args.case:
            continue
        name, kind = case["name"], case["kind"]
        acts: dict[str, torch.Tensor] = {}
        hooks = []

        def hook(key, transform=lambda t: t):
            def fn(_module, _inputs, output):
                value = output[0] if isinstance(output, tuple) else output
                acts[key] = transform(value.detach()).contiguous().clone()
            return fn

        def t(field):
            return tensors[f"{name}/{field}"]

        with torch.no_grad():
            if kind == "text_encoder":
                m = component("text_encoder", CLIPTextModelWithProjection)
                hooks.append(m.text_model.embeddings.register_forward_hook(hook("text_model.embeddings")))
                for i, layer in enumerate(m.text_model.encoder.layers):
                    hooks.append(layer.register_forward_hook(hook(f"text_model.encoder.layers.{i}")))
                out_ = m(t("input_ids"), output_hidden_states=True)
                acts["text_embeds"] = out_.text_embeds
            elif kind == "transformer":
                m = component("transformer", UVit2DModel)
                ids = t("input_ids")
                hw = ids.shape[1] * ids.shape[2]
                hooks.append(m.encoder_proj_layer_norm.register_forward_hook(hook("encoder_proj_layer_norm")))
                hooks.append(m.cond_embed.register_forward_hook(hook("cond_embed")))
                hooks.append(m.embed.register_forward_hook(hook("embed", nhwc)))
                for block_name in ("down_block", "up_block"):
                    block = getattr(m, block_name)
                    for sub in ("downsample", "upsample"):
                        if getattr(block, sub, None) is not None:
                            hooks.append(getattr(block, sub).register_forward_hook(hook(f"{block_name}.{sub}", nhwc)))
                    for i, r in enumerate(block.res_blocks):
                        hooks.append(r.register_forward_hook(hook(f"{block_name}.res_blocks.{i}", nhwc)))
                    for i, a in enumerate(block.attention_blocks):
                        # (B, h·w, C): the same memory as NHWC.
                        hooks.append(a.register_forward_hook(hook(f"{block_name}.attention_blocks.{i}")))
                for i, layer in enumerate(m.transformer_layers):
                    hooks.append(layer.register_forward_hook(hook(f"transformer_layers.{i}")))
                hooks.append(m.mlm_layer.register_forward_hook(hook("mlm_layer", nhwc)))
                m(ids, micro_conds=t("micro_conds"), pooled_text_emb=t("pooled_text_emb"),
                  encoder_hidden_states=t("encoder_hidden_states"))
                del hw
            elif kind in ("vq_decode", "vq_encode"):
                m = component("vqvae", VQModel)
                if kind == "vq_decode":
                    ids = t("ids")
                    hooks.append(m.decoder.mid_block.register_forward_hook(hook("decoder.mid_block")))
                    for i, b in enumerate(m.decoder.up_blocks):
                        hooks.append(b.register_forward_hook(hook(f"decoder.up_blocks.{i}")))
                    m.decode(ids, force_not_quantize=True, shape=(*ids.shape, m.config.latent_channels))
                else:
                    for i, b in enumerate(m.encoder.down_blocks):
                        hooks.append(b.register_forward_hook(hook(f"encoder.down_blocks.{i}")))
                    acts["latents"] = m.encode(t("image")).latents
            else:
                continue
        for h in hooks:
            h.remove()
        save_file({k: v.float().contiguous() for k, v in acts.items()}, str(out / f"{name}.torch.safetensors"))
        print(f"{name}: {len(acts)} activations", file=sys.stderr)


if __name__ == "__main__":
    main()
