"""The bounded GGUF reader: agrees with gguf.GGUFReader on well-formed files, never raises on hostile ones."""

from __future__ import annotations

import math
import os
import random
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelhangar.core.gguf_info import SHOW_MAX_ARRAY, model_info, read_gguf_metadata
from modelhangar.testing.gguf_factory import make_gguf

KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=20).filter(
    lambda k: not k.startswith("general.") and not k.startswith("llama.")
)
STRINGS = st.text(max_size=40)
INTS = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)
VALUES = st.one_of(
    STRINGS,
    st.booleans(),
    INTS,
    FLOATS,
    st.lists(st.integers(min_value=0, max_value=(1 << 32) - 1), min_size=1, max_size=12),
    st.lists(STRINGS, min_size=1, max_size=12),
    st.lists(FLOATS, min_size=1, max_size=12),
)


def reference_kv(path: Path) -> dict[str, Any]:
    """The KV pairs as gguf.GGUFReader (the upstream reader) reads them."""
    reader = gguf.GGUFReader(path)
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        out[key] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


def same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, float):
        return isinstance(ours, float) and math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-30)
    if isinstance(theirs, list):
        return isinstance(ours, list) and len(ours) == len(theirs) and all(map(same, ours, theirs))
    return bool(ours == theirs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.dictionaries(KEYS, VALUES, max_size=8), n_tensors=st.integers(1, 4))
def test_agrees_with_the_upstream_reader(tmp_path: Path, extra: dict[str, Any], n_tensors: int) -> None:
    path = tmp_path / "m.gguf"
    make_gguf(path, extra_kv=extra, n_tensors=n_tensors, tensor_elems=32, file_type=15)
    meta = read_gguf_metadata(path)
    assert meta is not None
    theirs = reference_kv(path)
    assert list(meta.kv) == list(theirs)
    for key, value in theirs.items():
        assert same(meta.kv[key], value), key
    assert meta.architecture == "llama"
    assert meta.file_type == 15
    assert meta.tensor_count == n_tensors
    assert meta.parameter_count == 32 * n_tensors


def test_float32_values_read_as_their_shortest_decimal(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    make_gguf(path, extra_kv={"llama.attention.layer_norm_rms_epsilon": 1e-5})
    meta = read_gguf_metadata(path)
    assert meta is not None
    assert meta.kv["llama.attention.layer_norm_rms_epsilon"] == 1e-05


def test_long_arrays_are_left_out_unless_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    tokens = [f"t{i}" for i in range(1000)]
    make_gguf(path, extra_kv={"tokenizer.ggml.tokens": tokens, "x.short": [1, 2, 3]})
    full = read_gguf_metadata(path)
    brief = read_gguf_metadata(path, max_array_len=SHOW_MAX_ARRAY)
    assert full is not None and brief is not None
    assert full.kv["tokenizer.ggml.tokens"] == tokens
    assert brief.kv["tokenizer.ggml.tokens"] == []
    assert brief.array_lengths["tokenizer.ggml.tokens"] == 1000
    assert model_info(full)["tokenizer.ggml.tokens"] == []
    assert model_info(full, verbose=True)["tokenizer.ggml.tokens"] == tokens
    assert model_info(brief)["x.short"] == [1, 2, 3]
    assert "general.name" not in model_info(full)


# ---------------------------------------------------------------- hostile files


def header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def kv_string(key: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key


HOSTILE = {
    "empty": b"",
    "magic only": b"GGUF",
    "wrong magic": b"GGML" + bytes(40),
    "version 1": b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
    "version 99": b"GGUF" + struct.pack("<IQQ", 99, 0, 0),
    # 49 bytes declaring a 2**62-element uint8 array: GGUFReader loops on this one.
    "huge array": header(0, 1) + kv_string(b"k") + struct.pack("<IIQ", 9, 0, 1 << 62),
    "huge string": header(0, 1) + kv_string(b"k") + struct.pack("<IQ", 8, 1 << 62),
    "huge key": header(0, 1) + struct.pack("<Q", 1 << 40),
    "huge kv count": header(0, 1 << 60),
    "huge tensor count": header(1 << 60, 0),
    "bad value type": header(0, 1) + kv_string(b"k") + struct.pack("<I", 77),
    "nested huge array": header(0, 1) + kv_string(b"k") + struct.pack("<IIQIQ", 9, 9, 1, 0, 1 << 62),
    "duplicate key": header(0, 2) + (kv_string(b"k") + struct.pack("<II", 4, 1)) * 2,
    "tensor with 9 dims": header(1, 0) + kv_string(b"t") + struct.pack("<I", 9) + bytes(80),
    "tensor past the end": header(1, 0) + kv_string(b"t") + struct.pack("<IQIQ", 1, 1 << 40, 0, 0),
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_files_are_not_gguf(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    assert read_gguf_metadata(path) is None


def test_every_truncation_of_a_valid_file_is_refused(tmp_path: Path) -> None:
    data = make_gguf(extra_kv={"tokenizer.ggml.tokens": ["a", "b", "c"]})
    path = tmp_path / "cut.gguf"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        assert read_gguf_metadata(path) is None, n
    path.write_bytes(data)
    assert read_gguf_metadata(path) is not None


def test_corrupted_bytes_never_raise(tmp_path: Path) -> None:
    data = bytearray(make_gguf(extra_kv={"tokenizer.ggml.tokens": ["a", "b"], "x.f": 0.5}))
    rng = random.Random(7)
    path = tmp_path / "flip.gguf"
    for _ in range(400):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(8, len(bad))] = rng.randrange(256)
        path.write_bytes(bad)
        read_gguf_metadata(path)  # metadata or None; never an exception, never a hang


def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_gguf_metadata(fifo) is None  # would block forever if opened for reading
    assert read_gguf_metadata(tmp_path) is None
    assert read_gguf_metadata(tmp_path / "missing") is None
