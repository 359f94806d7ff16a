"""Shared pieces of AmusedKit's PyTorch reference scripts: the CLIP tokenizer files, the component builders,
the parameter drawing, and the record writer (format: docs/reference-record.md, version 1).

Everything here runs on the CPU with one torch thread, so that regenerating gives byte-identical files.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import importlib.metadata
import json
import math
import os
from pathlib import Path

import torch

torch.set_num_threads(1)

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VERSIONS = {
    "torch": torch.__version__.split("+")[0],
    "diffusers": diffusers.__version__,
    "transformers": transformers.__version__,
    "safetensors": safetensors.__version__,
    "peft": importlib.metadata.version("peft"),
}


# ---------------------------------------------------------------------------------------------------------------
# The CLIP tokenizer vocabulary, derived from the BPE merges that ship in open-clip-torch exactly as CLIP does
# (openai/CLIP clip/simple_tokenizer.py): 256 byte symbols, the same with "</w>", 48,894 merges, 2 specials.

def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_tokenizer_files(folder: Path) -> None:
    """Writes vocab.json and merges.txt (the transformers layout) derived from open_clip's merges file."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408, len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = {tok: i for i, tok in enumerate(vocab)}
    (folder / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in merges:
            f.write(" ".join(m) + "\n")


def clip_tokenizer(scratch: Path) -> CLIPTokenizer:
    """The slow CLIPTokenizer the aMUSEd pipelines use (pad = <|endoftext|>, 77 tokens), on the derived files."""
    write_clip_tokenizer_files(scratch)
    tok = CLIPTokenizer(
        vocab_file=str(scratch / "vocab.json"),
        merges_file=str(scratch / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    return tok


# ---------------------------------------------------------------------------------------------------------------
# Drawing every parameter. Constant defaults (norm gains of 1, zero biases, zero GRN gamma/beta) would let a port
# ignore a parameter and still pass, so every tensor is drawn, with scales that keep activations in range.

def draw_parameters(module: torch.nn.Module, gen: torch.Generator, *, gains: dict[str, float] | None = None) -> None:
    gains = gains or {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gamma", "beta"):  # GlobalResponseNorm, shaped (1,1,1,C)
                v = 0.2 * torch.randn(p.shape, generator=gen)
            elif leaf == "bias":
                v = 0.1 * torch.randn(p.shape, generator=gen)
            elif p.ndim == 1:  # norm gains
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
            elif "embedding" in name and p.ndim == 2:  # token/position/codebook tables
                v = torch.randn(p.shape, generator=gen)
            else:  # linear and conv weights: variance-preserving for their fan-in
                fan_in = math.prod(p.shape[1:]) if p.ndim > 1 else 1
                if "up_block.upsample.conv" in name:  # ConvTranspose2d weights are (in, out, kH, kW)
                    fan_in = p.shape[0]
                v = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
            for pattern, gain in gains.items():
                if pattern in name:
                    v = v * gain if leaf != "bias" else v + gain
            p.copy_(v.to(p.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Tiny configurations shaped like the released ones (docs/model-notes.md §1), small enough to commit.

def tiny_text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,  # legacy ids, as in the released config (model notes §4)
    )


def tiny_transformer_config(*, resolution_512: bool) -> dict:
    return dict(
        hidden_size=32, use_bias=False, hidden_dropout=0.0, cond_embed_dim=16, micro_cond_encode_dim=4,
        micro_cond_embed_dim=20, encoder_hidden_size=16, vocab_size=65, codebook_size=64, in_channels=12,
        block_out_channels=24, num_res_blocks=2, downsample=resolution_512, upsample=resolution_512,
        block_num_heads=2, num_hidden_layers=2, num_attention_heads=2, attention_dropout=0.0, intermediate_size=40,
        layer_norm_eps=1e-6, ln_elementwise_affine=True, sample_size=16 if resolution_512 else 8,
    )


def tiny_vq_config() -> dict:
    # Three levels (scale factor 4) instead of five: the structure (downsample after every block but the last,
    # three resnets per decoder block) is the same, and the token grid must be a multiple of the scale factor for
    # the inpaint pipeline's mask processor (model notes §9.15), which a 5-level VQ would only allow at 16×16 and up.
    return dict(
        act_fn="silu", block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3, in_channels=3, out_channels=3, latent_channels=8,
        layers_per_block=1, lookup_from_codebook=True, mid_block_add_attention=False, norm_num_groups=4,
        norm_type="group", num_vq_embeddings=64, sample_size=32, force_upcast=True,
    )


def build_pipeline(transformer_config: dict, vq_config: dict, text_config: CLIPTextConfig, tokenizer: CLIPTokenizer,
                   seed: int, *, transformer_gains=None, vq_gains=None, text_gains=None) -> AmusedPipeline:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    transformer = UVit2DModel(**transformer_config).eval()
    vqvae = VQModel(**vq_config).eval()
    text_encoder = CLIPTextModelWithProjection(text_config).eval()
    draw_parameters(transformer, gen, gains=transformer_gains)
    draw_parameters(vqvae, gen, gains=vq_gains)
    draw_parameters(text_encoder, gen, gains=text_gains)
    scheduler = AmusedScheduler(mask_token_id=transformer_config["vocab_size"] - 1, masking_schedule="cosine")
    pipe = AmusedPipeline(vqvae=vqvae, tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                          scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------------
# Records.

class RecordWriter:
    """Collects cases and tensors, then writes record.json and record.safetensors."""

    def __init__(self, folder: Path, model: str = "model", only: set[str] | None = None):
        self.folder = folder
        self.model = model
        self.only = only
        self.cases: list[dict] = []
        self.tensors: dict[str, torch.Tensor] = {}

    def add(self, name: str, kind: str, tensors: dict[str, torch.Tensor], **keys) -> None:
        if self.only is not None and name not in self.only:
            return  # computed all the same, so every random draw after it stays where it was
        assert all(c["name"] != name for c in self.cases), name
        self.cases.append({"name": name, "kind": kind, **keys})
        for field, t in tensors.items():
            self.tensors[f"{name}/{field}"] = t.detach().contiguous().clone()

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "format": "amused-reference-record",
            "version": 1,
            "reference": {**{k: VERSIONS[k] for k in ("torch", "diffusers", "transformers")},
                          "device": "cpu", "dtype": "float32"},
            "model": self.model,
            "cases": self.cases,
        }
        (self.folder / "record.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
        save_file(self.tensors, str(self.folder / "record.safetensors"))


def encode_prompts(pipe: AmusedPipeline, prompts: list[str]):
    ids = pipe.tokenizer(prompts, padding="max_length", truncation=True,
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    out = pipe.text_encoder(ids, return_dict=True, output_hidden_states=True)
    return ids, out.hidden_states[-2], out.text_embeds


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pipeline(pipe: AmusedPipeline, folder: Path, *, variant_fp16: bool = False) -> None:
    pipe.save_pretrained(str(folder), safe_serialization=True)
    if variant_fp16:
        # Convert a copy: a round trip through float16 in place would leave the in-memory model (and every record
        # computed from it afterwards) with float16-rounded weights that the fp32 files do not have.
        for name in ("transformer", "vqvae", "text_encoder"):
            half = copy.deepcopy(getattr(pipe, name)).to(torch.float16)
            half.save_pretrained(str(folder / name), safe_serialization=True, variant="fp16")
            del half
    # transformers writes the tokenizer's files with the absolute path of nothing machine-specific, but drop the
    # added_tokens.json that some versions emit for specials already in vocab.json, so the layout matches the repos.
    extra = folder / "tokenizer" / "added_tokens.json"
    if extra.exists():
        extra.unlink()
    os.sync()
