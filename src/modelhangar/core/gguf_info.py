"""GGUF metadata for `/api/show` and `/api/tags`: read safely, never trusting the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

JSONValue = Any
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
}
HIDDEN_KEYS = {"general.name", "tokenizer.chat_template"}


@dataclass(frozen=True)
class GGUFMetadata:
    architecture: str
    kv: dict[str, JSONValue]
    parameter_count: int
    file_type: int | None
    tensor_count: int


def _plain(value: Any) -> JSONValue:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def read_gguf_metadata(path: str | os.PathLike[str]) -> GGUFMetadata | None:
    """The file's metadata, or None if it is not a readable GGUF file (never raises)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
        import gguf

        reader = gguf.GGUFReader(path, "r")
        kv: dict[str, JSONValue] = {}
        for name, field in reader.fields.items():
            if name.startswith("GGUF."):
                continue
            kv[name] = _plain(field.contents())
        params = sum(int(t.n_elements) for t in reader.tensors)
        ft = kv.get("general.file_type")
        return GGUFMetadata(
            architecture=str(kv.get("general.architecture", "")),
            kv=kv,
            parameter_count=params,
            file_type=int(ft) if isinstance(ft, int) else None,
            tensor_count=len(reader.tensors),
        )
    except Exception:  # a malformed file is not a crash (CVE-2024-39720)
        return None


def model_info(meta: GGUFMetadata, verbose: bool = False) -> dict[str, JSONValue]:
    """Ollama's `model_info`: the KV map minus hidden keys; long arrays emptied unless verbose."""
    out: dict[str, JSONValue] = {}
    for key, value in meta.kv.items():
        if key in HIDDEN_KEYS:
            continue
        out[key] = [] if isinstance(value, list) and len(value) > 5 and not verbose else value
    out["general.architecture"] = meta.architecture
    out["general.parameter_count"] = meta.parameter_count
    return out


def format_parameter_size(n: int) -> str:
    """Ollama's human parameter count: 8.0B, 494.03M, 12.5K."""
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if unit == "B" else f"{value:.2f}".rstrip("0").rstrip(".") + unit
    return str(n)


def file_type_name(ft: int | None) -> str:
    if ft is None:
        return ""
    return FILE_TYPES.get(ft, "unknown")


def config_for_model(meta: GGUFMetadata | None) -> dict[str, JSONValue]:
    """Ollama's config blob (`model.ConfigV2`) for a GGUF model."""
    arch = meta.architecture if meta else ""
    return {
        "model_format": "gguf" if meta else "",
        "model_family": arch,
        "model_families": [arch] if arch else None,
        "model_type": format_parameter_size(meta.parameter_count) if meta else "",
        "file_type": file_type_name(meta.file_type) if meta else "",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }


def details_from_config(config: Any) -> dict[str, JSONValue]:
    """Ollama's `details` object from a config blob; all six keys, whatever the input."""
    c = config if isinstance(config, dict) else {}

    def text(key: str) -> str:
        v = c.get(key)
        return v if isinstance(v, str) else ""

    fams = c.get("model_families")
    return {
        "parent_model": "",
        "format": text("model_format"),
        "family": text("model_family"),
        "families": [f for f in fams if isinstance(f, str)] if isinstance(fams, list) else None,
        "parameter_size": text("model_type"),
        "quantization_level": text("file_type"),
    }
