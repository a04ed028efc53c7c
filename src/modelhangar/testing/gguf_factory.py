"""Tiny, valid GGUF files (written with gguf.GGUFWriter) for tests and benchmarks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _int_type(gguf: Any, values: list[int]) -> Any:
    """The narrowest usual GGUF integer type holding all of `values` (uint32 preferred, as llama.cpp does)."""
    lo, hi = min(values), max(values)
    if lo >= 0:
        return gguf.GGUFValueType.UINT32 if hi < 1 << 32 else gguf.GGUFValueType.UINT64
    return gguf.GGUFValueType.INT32 if lo >= -(1 << 31) and hi < 1 << 31 else gguf.GGUFValueType.INT64


def _add_value(w: Any, gguf: Any, key: str, value: Any) -> None:
    """Add one KV pair, choosing a GGUF type from the Python type.

    str → STRING, bool → BOOL, int → UINT32/UINT64/INT32/INT64, float → FLOAT32, list → ARRAY (element type
    from the elements; GGUFWriter cannot write empty arrays). A `(gguf.GGUFValueType, value)` tuple forces
    the type (for arrays, the element type).
    """
    vt = gguf.GGUFValueType
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], vt):
        forced, raw = value
        if isinstance(raw, list):
            w.add_key_value(key, raw, vt.ARRAY, sub_type=forced)
        else:
            w.add_key_value(key, raw, forced)
        return
    if isinstance(value, str):
        w.add_key_value(key, value, vt.STRING)
    elif isinstance(value, bool):
        w.add_key_value(key, value, vt.BOOL)
    elif isinstance(value, int):
        w.add_key_value(key, value, _int_type(gguf, [value]))
    elif isinstance(value, float):
        w.add_key_value(key, value, vt.FLOAT32)
    elif isinstance(value, list):
        if not value:
            raise ValueError(f"make_gguf: GGUFWriter cannot write the empty array {key}")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            sub = _int_type(gguf, value)
        else:
            sub = vt.get_type(value[0])
        w.add_key_value(key, value, vt.ARRAY, sub_type=sub)
    else:
        raise TypeError(f"make_gguf: no GGUF type for {key}={value!r}")


def make_gguf(
    path: str | os.PathLike[str] | None = None,
    *,
    arch: str = "llama",
    n_embd: int = 8,
    n_layers: int = 1,
    seed: int = 0,
    description: str = "tiny",
    file_type: int | None = None,
    extra_kv: Mapping[str, Any] | None = None,
    n_tensors: int = 1,
    tensor_elems: int = 64,
) -> bytes:
    """Write a small valid GGUF file to `path` (a temporary file, then deleted, when None); return its bytes.

    The file holds `general.architecture`, `<arch>.block_count` (n_layers), `<arch>.context_length` (128),
    `<arch>.embedding_length` (n_embd), `<arch>.attention.head_count` (1), `general.description`,
    `general.file_type` (when given) and `extra_kv`, then `n_tensors` F32 tensors of `tensor_elems`
    elements each filled with random numbers drawn from `seed`: different seeds give different bytes,
    equal arguments give equal bytes. With the defaults the file is 576 bytes.
    """
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="make-gguf-") as tmp:
        out = Path(tmp, "model.gguf") if path is None else Path(path)
        w = gguf.GGUFWriter(str(out), arch)
        w.add_block_count(n_layers)
        w.add_context_length(128)
        w.add_embedding_length(n_embd)
        w.add_head_count(1)
        w.add_description(description)
        if file_type is not None:
            w.add_file_type(file_type)
        for key, value in (extra_kv or {}).items():
            _add_value(w, gguf, key, value)
        rng = np.random.default_rng(seed)
        for i in range(n_tensors):
            name = "token_embd.weight" if i == 0 else f"blk.{i - 1}.attn_q.weight"
            w.add_tensor(name, rng.standard_normal(tensor_elems).astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return out.read_bytes()
