"""Untrusted GGUF files: their metadata for `/api/create`, `/api/show` and `/api/tags`, read with limits."""

from __future__ import annotations

import math
import os
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, TypeAlias

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"

# --------------------------------------------------------------------------------------------- limits
# A GGUF file comes from an untrusted upload or registry. `gguf.GGUFReader` is not used to parse it at run
# time: a 49-byte file declaring a 2**62-element array makes it loop forever (it reads past the end as
# empty views), and a real 262k-token vocabulary costs it ~25 s and ~770 MB. The parser below reads only the
# header, the KV section and the tensor infos with bounded, sequential reads (no mmap, so a file truncated
# under us cannot SIGBUS the server), checks every length against the file size and never touches tensor
# data. The tests check it against GGUFReader on well-formed files.

MAX_STRING_BYTES: Final = 16 << 20
"""Longest string value or key accepted (Ollama's `fs/gguf.MaxStringLength`)."""
MAX_ARRAY_ITEMS: Final = 64 << 20
"""Longest array accepted (Ollama's `fs/gguf.MaxArraySize`)."""
MAX_TENSORS: Final = 1 << 17
"""Most tensor infos accepted (real models have at most a few thousand)."""
MAX_TENSOR_DIMS: Final = 4
"""GGML_MAX_DIMS: llama.cpp and Ollama reject more."""
MAX_TENSOR_NAME_BYTES: Final = 1024
METADATA_BUDGET: Final = 256 << 20
"""Estimated bytes of Python objects one file may make us build. Arrays that would not fit are recorded by
length only (value `[]`); scalars that would not fit make the file invalid. Real models need a few tens of
MB."""

if TYPE_CHECKING:
    from modelhangar.core.blobstore import BlobStore

_CHUNK: Final = 1 << 20
_STRING: Final = 8
_ARRAY: Final = 9
_FLOAT32: Final = 6
_UINT32: Final = 4
_SCALAR_CODES: Final[dict[int, str]] = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "?",  # bool
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}
_ITEM_COST: Final = 32
_STRING_COST: Final = 56

# llama.cpp `llama_ftype` → name, as Ollama's `fs/ggml/type.go` `FileType.String()` prints it (checked
# against ollama/ollama fb30760 of 2026-08-21). 4-6 (Q4_1_F16, Q4_2, Q4_3) and 33-35 (Q4_0_4_4, Q4_0_4_8,
# Q4_0_8_8) are removed types that Ollama prints as "unknown".
FILE_TYPES: Final[dict[int, str]] = {
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
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
HIDDEN_KEYS: Final = frozenset({"general.name", "tokenizer.chat_template"})
"""KV pairs Ollama leaves out of `/api/show`'s `model_info`."""
SHOW_MAX_ARRAY: Final = 5
"""Without `verbose`, `model_info` empties arrays longer than this."""


@dataclass(frozen=True)
class GGUFMetadata:
    """What `/api/create` and `/api/show` need from a GGUF file."""

    architecture: str
    """`general.architecture`, "" when absent or not a string."""
    kv: dict[str, JSONValue]
    """Every KV pair of the file in file order, as JSON values (see `read_gguf_metadata`)."""
    parameter_count: int
    """Sum of the tensors' element counts (what Ollama reports as `general.parameter_count`)."""
    file_type: int | None
    """`general.file_type` (a llama.cpp `llama_ftype`), None when absent or not an integer."""
    tensor_count: int
    array_lengths: dict[str, int] = field(default_factory=dict)
    """True length of every array KV, including those left unread (whose `kv` value is `[]`)."""
    cost: int = field(default=0, compare=False)
    """Estimated bytes of Python objects this metadata holds (what the cache counts)."""


class _Invalid(Exception):
    """The file is not a well-formed GGUF file within our limits."""


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def spend(self, cost: int) -> bool:
        if cost > self.left:
            return False
        self.left -= cost
        return True


class _Reader:
    """Sequential reads from a file of known size through a window; every read is bounds-checked."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        self.size = size
        self.buf = b""
        self.pos = 0  # index into buf
        self.base = 0  # file offset of buf[0]

    def offset(self) -> int:
        return self.base + self.pos

    def _need(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        if n < 0 or self.offset() + n > self.size:
            raise _Invalid("read past the end of the file")
        rest = self.buf[self.pos :]
        self.base = self.offset()
        self.buf = rest + self.f.read(max(n - len(rest), _CHUNK))
        self.pos = 0
        if len(self.buf) < n:
            raise _Invalid("file shorter than its size")

    def take(self, n: int) -> bytes:
        self._need(n)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        self._need(st.size)
        out = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return out

    def skip(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        target = self.offset() + n
        if target > self.size:
            raise _Invalid("skip past the end of the file")
        self.f.seek(target)
        self.base, self.buf, self.pos = target, b"", 0


def _float32(x: float) -> float | None:
    """The shortest decimal that reads back as the same float32 (what Go's JSON encoder prints)."""
    if not math.isfinite(x):
        return None
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        try:
            if struct.unpack("<f", struct.pack("<f", y))[0] == x:
                return y
        except OverflowError:
            continue
    return x


class _Parser:
    def __init__(self, r: _Reader, endian: str, max_array_len: int | None) -> None:
        self.r = r
        self.e = endian
        self.max_array_len = max_array_len
        self.budget = _Budget(METADATA_BUDGET)
        self.u32 = struct.Struct(endian + "I")
        self.u64 = struct.Struct(endian + "Q")
        self.scalars = {t: struct.Struct(endian + c) for t, c in _SCALAR_CODES.items()}

    def string_bytes(self, limit: int = MAX_STRING_BYTES) -> bytes:
        (n,) = self.r.unpack(self.u64)
        if n > limit:
            raise _Invalid("string too long")
        return self.r.take(n)

    def scalar(self, vtype: int) -> JSONValue:
        if vtype == _STRING:
            raw = self.string_bytes()
            if not self.budget.spend(_STRING_COST + len(raw)):
                raise _Invalid("metadata too large")
            return raw.decode("utf-8", "replace")
        st = self.scalars.get(vtype)
        if st is None:
            raise _Invalid(f"bad value type {vtype}")
        value: JSONValue = self.r.unpack(st)[0]
        if vtype == _FLOAT32:
            return _float32(float(value))  # type: ignore[arg-type]
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    def array(self) -> tuple[list[JSONValue], int]:
        r = self.r
        itype, n = r.unpack(struct.Struct(self.e + "IQ"))
        if n > MAX_ARRAY_ITEMS:
            raise _Invalid("array too long")
        keep = self.max_array_len is None or n <= self.max_array_len
        if itype == _STRING:
            out: list[JSONValue] = []
            u64, budget = self.u64, self.budget
            for _ in range(n):
                (length,) = r.unpack(u64)
                if length > MAX_STRING_BYTES:
                    raise _Invalid("string too long")
                if keep and budget.spend(_STRING_COST + length):
                    out.append(r.take(length).decode("utf-8", "replace"))
                else:
                    keep = False
                    out = []
                    r.skip(length)
            return out, n
        code = _SCALAR_CODES.get(itype)
        if code is None:  # nested arrays and unknown types: llama.cpp rejects them too
            raise _Invalid(f"bad array type {itype}")
        nbytes = n * struct.calcsize(code)
        if not (keep and self.budget.spend(_ITEM_COST * n)):
            r.skip(nbytes)
            return [], n
        values: list[JSONValue] = list(struct.unpack(f"{self.e}{n}{code}", r.take(nbytes)))
        if code in "fd":
            values = [v if math.isfinite(v) else None for v in values]  # type: ignore[arg-type]
        return values, n


def _quant_sizes() -> dict[int, tuple[int, int]]:
    """ggml tensor type → (block size in elements, bytes per block), from the gguf package."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(k): (int(v[0]), int(v[1])) for k, v in GGML_QUANT_SIZES.items()}


def _parse(f: IO[bytes], size: int, max_array_len: int | None) -> GGUFMetadata:
    r = _Reader(f, size)
    if r.take(4) != b"GGUF":
        raise _Invalid("no GGUF magic")
    raw_version = r.take(4)
    if struct.unpack("<I", raw_version)[0] in (2, 3):
        endian = "<"
    elif struct.unpack(">I", raw_version)[0] in (2, 3):
        endian = ">"
    else:  # version 1 (2023, uint32 lengths) is not supported, nor is anything newer than 3
        raise _Invalid("unsupported GGUF version")
    p = _Parser(r, endian, max_array_len)
    n_tensors, n_kv = r.unpack(struct.Struct(endian + "QQ"))
    if n_tensors > MAX_TENSORS:
        raise _Invalid("too many tensors")

    kv: dict[str, JSONValue] = {}
    lengths: dict[str, int] = {}
    seen: set[str] = set()
    alignment = 32
    for _ in range(n_kv):
        key = p.string_bytes().decode("utf-8", "replace")
        if key in seen:
            raise _Invalid(f"duplicate key {key!r}")
        seen.add(key)
        (vtype,) = r.unpack(p.u32)
        if not p.budget.spend(_STRING_COST + len(key)):
            raise _Invalid("metadata too large")
        value: JSONValue
        if vtype == _ARRAY:
            value, lengths[key] = p.array()
        else:
            value = p.scalar(vtype)
        if key == "general.alignment":
            if vtype != _UINT32 or not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise _Invalid("bad general.alignment")
            alignment = value
        if not key.startswith("GGUF."):  # GGUFReader's pseudo-fields; a real key of that name is dropped
            kv[key] = value

    tensor_u32 = p.u32
    tail = struct.Struct(endian + "IQ")
    names: set[bytes] = set()
    tensors: list[tuple[int, int, int, int]] = []  # (type, offset, elements, elements of dim 0)
    for _ in range(n_tensors):
        name = p.string_bytes(MAX_TENSOR_NAME_BYTES)
        if name in names:
            raise _Invalid("duplicate tensor name")
        names.add(name)
        if not p.budget.spend(_STRING_COST + len(name)):
            raise _Invalid("metadata too large")
        (n_dims,) = r.unpack(tensor_u32)
        if n_dims > MAX_TENSOR_DIMS:
            raise _Invalid("too many tensor dimensions")
        dims: tuple[int, ...] = r.unpack(struct.Struct(f"{endian}{n_dims}Q"))
        ttype, offset = r.unpack(tail)
        tensors.append((ttype, offset, math.prod(dims), dims[0] if dims else 1))

    if tensors:
        data_start = -(-r.offset() // alignment) * alignment
        quant = _quant_sizes()
        for ttype, offset, elements, ne0 in tensors:
            if offset % alignment:
                raise _Invalid("misaligned tensor")
            sizes = quant.get(ttype)
            if sizes is None:  # a ggml type newer than our gguf package: its size is unknown, trust it
                continue
            block, type_size = sizes
            if ne0 % block:
                raise _Invalid("tensor row not a whole number of blocks")
            if data_start + offset + elements // block * type_size > size:
                raise _Invalid("tensor data past the end of the file")

    arch = kv.get("general.architecture")
    ft = kv.get("general.file_type")
    return GGUFMetadata(
        architecture=arch if isinstance(arch, str) else "",
        kv=kv,
        parameter_count=sum(t[2] for t in tensors),
        file_type=ft if isinstance(ft, int) and not isinstance(ft, bool) else None,
        tensor_count=len(tensors),
        array_lengths=lengths,
        cost=METADATA_BUDGET - p.budget.left,
    )


def read_gguf_metadata(
    path: str | os.PathLike[str], *, max_array_len: int | None = None
) -> GGUFMetadata | None:
    """The metadata of the GGUF file at `path`, or None if it is not a well-formed GGUF file (never raises).

    Only regular files are opened (no FIFOs or devices, cf. CVE-2024-39721), the 4-byte `GGUF` magic is
    checked first, and only the header, KV section and tensor infos are read; tensor data is never read, but
    each tensor must lie inside the file. GGUF versions 2 and 3 are accepted, little- and big-endian.

    KV values become JSON values: integers and bools as such, float32 as the shortest decimal that reads back
    as the same float32 (1e-05, not 9.999999747378752e-06), float64 as is, NaN and infinities as None,
    strings decoded as UTF-8 with invalid bytes replaced, arrays as lists (float32 elements widened exactly).
    Arrays longer than `max_array_len` (None: no limit), or that would exceed `METADATA_BUDGET`, are not read:
    their value is `[]` and their real length is in `array_lengths`. `/api/show` without `verbose` needs
    only `max_array_len=SHOW_MAX_ARRAY`, which makes large vocabularies cheap.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused as not regular.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size < 4 or f.read(4) != b"GGUF":
                return None
            f.seek(0)
            return _parse(f, st.st_size, max_array_len)
    except Exception:  # malformed, truncated or hostile files are "not GGUF", never a crash (CVE-2024-39720)
        return None


CACHE_ENTRIES: Final = 64
CACHE_BUDGET: Final = 128 << 20
"""The metadata cache holds at most this many entries and estimated bytes."""


class _Cache:
    """Parsed metadata of blobs by digest (blobs never change under a digest), least recently used
    first out; one parse per blob at a time, however many requests ask for it at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int | None], tuple[GGUFMetadata | None, int]] = OrderedDict()
        self._cost = 0
        self._gates: dict[tuple[str, int | None], threading.Lock] = {}

    def _get(self, key: tuple[str, int | None]) -> tuple[GGUFMetadata | None] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        self._entries.move_to_end(key)
        return (hit[0],)

    def get(
        self, path: str | os.PathLike[str] | _Ranged, digest: str, max_array_len: int | None
    ) -> GGUFMetadata | None:
        key = (digest, max_array_len)
        with self._lock:
            if (hit := self._get(key)) is not None:
                return hit[0]
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if (hit := self._get(key)) is not None:
                    return hit[0]
            if isinstance(path, _Ranged):
                meta = _read_ranged(path, max_array_len)
            else:
                meta = read_gguf_metadata(path, max_array_len=max_array_len)
            cost = 256 + (meta.cost if meta is not None else 0)
            with self._lock:
                self._gates.pop(key, None)
                if cost <= CACHE_BUDGET // 4 and key not in self._entries:
                    self._entries[key] = (meta, cost)
                    self._cost += cost
                    while len(self._entries) > CACHE_ENTRIES or self._cost > CACHE_BUDGET:
                        _, (_, dropped) = self._entries.popitem(last=False)
                        self._cost -= dropped
            return meta


class _Ranged:
    """A blob with no local file, read by ranges (an object store): what `_Reader` needs of a file."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at = read_at
        self.size = size
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        data = self._read_at(self.pos, n) if n > 0 else b""
        self.pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos


def _read_ranged(f: _Ranged, max_array_len: int | None) -> GGUFMetadata | None:
    try:
        if f.size < 4 or f.read(4) != b"GGUF":
            return None
        f.seek(0)
        return _parse(f, f.size, max_array_len)  # type: ignore[arg-type]
    except Exception:  # as read_gguf_metadata: never a crash
        return None


_cache = _Cache()


def stored_blob_metadata(
    blobs: BlobStore, digest: str, size: int, *, max_array_len: int | None = None
) -> GGUFMetadata | None:
    """`blob_metadata` of a stored blob, from its file or, in an object store, by ranged reads."""
    path = blobs.local_path(digest)
    if path is not None:
        return _cache.get(path, digest, max_array_len)

    def read_at(offset: int, n: int) -> bytes:
        return b"".join(blobs.stream(digest, offset, n))

    return _cache.get(_Ranged(read_at, size), digest, max_array_len)


def blob_metadata(
    path: str | os.PathLike[str], digest: str, *, max_array_len: int | None = None
) -> GGUFMetadata | None:
    """`read_gguf_metadata` of the blob `digest` stored at `path`, parsed once and then cached."""
    return _cache.get(path, digest, max_array_len)


def model_info(meta: GGUFMetadata, verbose: bool = False) -> dict[str, JSONValue]:
    """Ollama's `/api/show` `model_info`, keys sorted as Go's JSON encoder sorts a map.

    The KV map minus `general.name` and `tokenizer.chat_template`, plus `general.parameter_count` (the
    tensors' element count, replacing any stored value) and `general.architecture`. Without `verbose`, arrays
    of more than 5 items are replaced by `[]` (Ollama's documented behaviour; note that Ollama's Go code at
    HEAD actually sends `null` for every non-empty array when not verbose). The values are shared with `meta`.
    """
    out: dict[str, JSONValue] = {}
    for key, value in meta.kv.items():
        if key in HIDDEN_KEYS:
            continue
        long = isinstance(value, list) and meta.array_lengths.get(key, len(value)) > SHOW_MAX_ARRAY
        if long and not verbose:
            value = []
        out[key] = value
    out["general.parameter_count"] = meta.parameter_count
    if meta.architecture:
        out["general.architecture"] = meta.architecture
    return dict(sorted(out.items()))


def format_parameter_size(n: int) -> str:
    """Ollama's `format.HumanNumber` (ollama/ollama `format/format.go`, unchanged at fb30760).

    ≥1e9: "8B" when whole, else one decimal ("8.0B" for 8030261248, "1.2B"); ≥1e6: "494M" when whole,
    else two decimals ("494.03M"); ≥1e3: rounded thousands ("13K"); below: the number ("999"). Negative
    numbers (impossible in Go's uint64) print as "0".
    """
    if n < 0:
        return "0"
    x = float(n)
    if n >= 1_000_000_000:
        v = x / 1_000_000_000
        return f"{v:.0f}B" if v == math.floor(v) else f"{v:.1f}B"
    if n >= 1_000_000:
        v = x / 1_000_000
        return f"{v:.0f}M" if v == math.floor(v) else f"{v:.2f}M"
    if n >= 1_000:
        return f"{x / 1_000:.0f}K"
    return str(n)


def file_type_name(ft: int | None) -> str:
    """Ollama's name for a `general.file_type` value: "Q4_K_M" for 15, "unknown" if unknown, "" for None.

    Note: Ollama's create reads a missing or 0 `general.file_type` as unknown (`KV.FileType`), so it writes
    "unknown" where this writes "" (missing) or "F32" (0, the value llama.cpp gives all-F32 files).
    """
    if ft is None:
        return ""
    return FILE_TYPES.get(ft, "unknown")


def config_for_model(meta: GGUFMetadata | None) -> dict[str, JSONValue]:
    """Ollama's config blob (`model.ConfigV2`) for a GGUF model; for None, the same keys left empty."""
    arch = meta.architecture if meta is not None else ""
    families: JSONValue = [arch] if arch else None
    return {
        "model_format": "gguf" if meta is not None else "",
        "model_family": arch,
        "model_families": families,
        "model_type": format_parameter_size(meta.parameter_count) if meta is not None else "",
        "file_type": file_type_name(meta.file_type) if meta is not None else "",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }


def details_from_config(config: object) -> dict[str, JSONValue]:
    """Ollama's `ModelDetails` JSON from a config blob: always all six keys, whatever `config` holds.

    Non-string fields read as "", and `families` is the list of strings in `model_families` (None when
    it is missing or not a list).
    """
    c: dict[Any, Any] = config if isinstance(config, dict) else {}

    def text(key: str) -> str:
        v = c.get(key)
        return v if isinstance(v, str) else ""

    raw = c.get("model_families")
    families: JSONValue = [f for f in raw if isinstance(f, str)] if isinstance(raw, list) else None
    return {
        "parent_model": "",
        "format": text("model_format"),
        "family": text("model_family"),
        "families": families,
        "parameter_size": text("model_type"),
        "quantization_level": text("file_type"),
    }
