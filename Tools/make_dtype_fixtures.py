#!/usr/bin/env python3
"""Writes Fixtures/dtypes/: files of every dtype a format can carry, written by the real Python writers, and the
values those writers' readers give back — for the readers' dtype tables. Needs only numpy, h5py, gguf, ml_dtypes
and safetensors (no torch):

    Tools/.venv/bin/python Tools/make_dtype_fixtures.py

- gguf_types.gguf (gguf-py): I8, I16, I32, I64 and F64 tensors (GGUF's integer and double types).
- float16.h5 (h5py): a float16 dataset, as Keras mixed precision saves weights; bfloat16.h5: an ml_dtypes bfloat16
  array, which h5py stores as an untagged 2-byte opaque type (refused: it cannot be told from other opaque data).
- array.npy, fortran.npy, bigendian.npy, bool.npy (numpy.save): bare .npy files, one tensor each.
- expected.safetensors: every tensor above as the Python readers read it (gguf.GGUFReader, h5py, numpy.load), named
  <file>/<tensor>.
The MANIFEST.json entries of these files are updated in place (Tools/make_fixtures.py keeps them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import h5py
import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "Fixtures"
FOLDER = FIXTURES / "dtypes"
COMMAND = "Tools/.venv/bin/python Tools/make_dtype_fixtures.py"
VERSIONS = {"numpy": np.__version__, "h5py": h5py.__version__, "gguf": "0.17.1", "ml_dtypes": ml_dtypes.__version__}


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20241201)
    expected: dict[str, np.ndarray] = {}

    # GGUF: integer types and F64 (gguf-py picks the type from the numpy dtype). Shapes are stored innermost first;
    # GGUFReader's `data` is in the row-major shape numpy gives it.
    writer = gguf.GGUFWriter(str(FOLDER / "gguf_types.gguf"), "amused-test")
    arrays = {
        "i8": np.array([[-128, -1, 0, 127], [5, -6, 7, -8]], dtype=np.int8),
        "i16": np.array([[-32768, -1, 0, 32767], [300, -301, 302, -303]], dtype=np.int16),
        "i32": np.array([[-(2**31), -1, 0, 2**31 - 1], [70000, -70001, 1, 2]], dtype=np.int32),
        "i64": np.array([[-(2**53), -1, 0, 2**53], [9, -9, 10, -10]], dtype=np.int64),
        "f64": rng.standard_normal((2, 4)),
    }
    for name, a in arrays.items():
        writer.add_tensor(name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    for t in gguf.GGUFReader(str(FOLDER / "gguf_types.gguf")).tensors:
        expected[f"gguf_types.gguf/{t.name}"] = np.array(t.data).reshape(arrays[t.name].shape)

    # HDF5: float16 (Keras mixed precision), and bfloat16 as ml_dtypes + h5py store it.
    half = (rng.standard_normal((3, 5)) * 4).astype(np.float16)
    with h5py.File(FOLDER / "float16.h5", "w", libver="earliest") as f:
        f.create_group("dense").create_dataset("kernel", data=half, track_times=False)
        f.create_dataset("bias_chunked", data=half[0], chunks=(5,), compression="gzip", shuffle=True,
                         track_times=False)
    with h5py.File(FOLDER / "float16.h5", "r") as f:
        expected["float16.h5/dense.kernel"] = f["dense/kernel"][()]
        expected["float16.h5/bias_chunked"] = f["bias_chunked"][()]
    with h5py.File(FOLDER / "bfloat16.h5", "w", libver="earliest") as f:
        f.create_dataset("w", data=np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16), track_times=False)

    # Bare .npy files.
    npys = {
        "array.npy": rng.standard_normal((3, 4)).astype(np.float32),
        "fortran.npy": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        "bigendian.npy": np.arange(6, dtype=">f8").reshape(2, 3) / 3,
        "bool.npy": np.array([True, False, True]),
    }
    for name, a in npys.items():
        np.save(FOLDER / name, a)
        expected[f"{name}/{name[:-4]}"] = np.ascontiguousarray(np.load(FOLDER / name)).astype(
            a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype)

    save_file({k: np.ascontiguousarray(v) for k, v in sorted(expected.items())}, str(FOLDER / "expected.safetensors"))
    update_manifest()


def update_manifest() -> None:
    path = FIXTURES / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    others = [e for e in manifest["files"] if not e["file"].startswith("dtypes/")]
    ours = [{"file": str(p.relative_to(FIXTURES)), "size": p.stat().st_size,
             "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in sorted(FOLDER.iterdir()) if p.is_file()]
    manifest["files"] = sorted(others + ours, key=lambda e: e["file"])
    manifest["also"] = {"dtypes/": {"generator": COMMAND, "versions": VERSIONS}}
    path.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
