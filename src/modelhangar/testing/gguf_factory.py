"""Tiny, valid GGUF files for tests and benchmarks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def make_gguf(
    path: str | os.PathLike[str] | None = None,
    *,
    arch: str = "llama",
    seed: int = 0,
    description: str = "tiny",
    file_type: int | None = None,
    extra_kv: dict[str, Any] | None = None,
    n_tensors: int = 1,
    tensor_elems: int = 64,
) -> bytes:
    """Write a small GGUF file (to a temp file when path is None) and return its bytes."""
    import gguf
    import numpy as np

    tmp = None
    if path is None:
        fd, tmp = tempfile.mkstemp(suffix=".gguf")
        os.close(fd)
        path = tmp
    try:
        w = gguf.GGUFWriter(str(path), arch)
        w.add_block_count(1)
        w.add_context_length(128)
        w.add_embedding_length(8)
        w.add_head_count(1)
        w.add_description(description)
        if file_type is not None:
            w.add_file_type(file_type)
        for key, value in (extra_kv or {}).items():
            if isinstance(value, str):
                w.add_string(key, value)
            elif isinstance(value, bool):
                w.add_bool(key, value)
            elif isinstance(value, int):
                w.add_uint32(key, value)
            elif isinstance(value, float):
                w.add_float32(key, value)
            elif isinstance(value, list):
                w.add_array(key, value)
        rng = np.random.default_rng(seed)
        for i in range(n_tensors):
            w.add_tensor(f"blk.{i}.weight", rng.random(tensor_elems, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return Path(path).read_bytes()
    finally:
        if tmp is not None:
            os.unlink(tmp)
