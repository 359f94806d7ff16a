"""The machine a measurement ran on, for every benchmark and training log: the CPU's name, family and model, and
the vector extensions that decide which kernels run (the CPU changes between sessions on the same machine kind)."""

from __future__ import annotations

from pathlib import Path

VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def cpu() -> str:
    """`AMD EPYC (family 25, model 1)`-style: torch's kernels, and so the low bits of results, depend on it."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def vector_extensions() -> str:
    """The extensions among VECTOR_FLAGS the CPU reports."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return " ".join(f for f in VECTOR_FLAGS if f in flags) or "none of " + ", ".join(VECTOR_FLAGS)
