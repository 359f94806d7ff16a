"""Small seed bundles for the `bundle` fuzz target: each bundle in the corpus cut down to its first few tensors per
component and the first tensor of every other quantization scheme (buffers copied as stored, re-laid out at aligned offsets, the manifest and its SHA-256 rewritten). The
reader and the integrity check cost time in proportion to the bytes, so seeds of a few KB fuzz ~50× faster than the
150 KB bundles the tiny fixtures convert to, over the same manifest shapes. Standard library only.

    python3 Tools/fuzz_bundle_seeds.py [--keep 3] [DIR]   # DIR defaults to Tests/Fuzz/corpus/bundle; writes beside
"""
import argparse
import glob
import hashlib
import json
import os
import struct

ALIGN = 64


def shrink(data: bytes, keep: int) -> bytes | None:
    if len(data) < ALIGN or data[:8] != b"AMUSEDKB":
        return None
    offset, length = struct.unpack("<QQ", data[16:32])
    try:
        manifest = json.loads(data[offset:offset + length])
    except ValueError:
        return None
    out = bytearray(ALIGN)

    def move(buffer):
        start, stored = buffer["offset"], buffer["stored_bytes"]
        if start + stored > len(data):
            raise ValueError("buffer outside the file")
        out.extend(b"\0" * (-len(out) % ALIGN))
        buffer["offset"] = len(out)
        out.extend(data[start:start + stored])

    try:
        for component in manifest["components"]:
            # The first `keep` tensors and the first of every other scheme (so every decoder stays covered).
            kept, schemes = [], set()
            for i, tensor in enumerate(component["tensors"]):
                if i < keep or tensor.get("scheme") not in schemes:
                    kept.append(tensor)
                schemes.add(tensor.get("scheme"))
            component["tensors"] = kept
            for tensor in component["tensors"]:
                for buffer in tensor["buffers"]:
                    move(buffer)
        files = manifest.get("files") or {}
        for name in files:
            move(files[name])
    except (KeyError, TypeError, ValueError):
        return None
    manifest.pop("parity", None)
    text = json.dumps(manifest, separators=(",", ":")).encode()
    out.extend(b"\0" * (-len(out) % ALIGN))
    manifest_offset = len(out)
    out.extend(text)
    out[0:64] = data[:16] + struct.pack("<QQ", manifest_offset, len(text)) + hashlib.sha256(text).digest()
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=int, default=3)
    ap.add_argument("dir", nargs="?", default="Tests/Fuzz/corpus/bundle")
    args = ap.parse_args()
    written = set()
    for path in sorted(glob.glob(os.path.join(args.dir, "*"))):
        small = shrink(open(path, "rb").read(), args.keep)
        if small is None or len(small) >= os.path.getsize(path):
            continue
        name = hashlib.sha1(small).hexdigest()
        if name not in written:
            written.add(name)
            with open(os.path.join(args.dir, name), "wb") as f:
                f.write(small)
    print(f"{len(written)} seed bundles written into {args.dir}")


if __name__ == "__main__":
    main()
