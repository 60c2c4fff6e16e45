"""The GGUF header, read without llama.cpp: enough to tell whether a model fits in memory."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from prompt_descent.errors import ModelError

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read(src: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = src.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _read_value(src: BinaryIO, kind: int) -> Any:
    if kind in _GGUF_SCALARS:
        return _read(src, _GGUF_SCALARS[kind])
    if kind == _GGUF_STRING:
        return src.read(_read(src, "<Q")).decode("utf-8", "replace")
    if kind == _GGUF_ARRAY:
        item_kind, count = _read(src, "<I"), _read(src, "<Q")
        if item_kind in _GGUF_SCALARS:  # never needed: skip without decoding
            src.seek(struct.calcsize(_GGUF_SCALARS[item_kind]) * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _read_value(src, item_kind)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar key/values of a GGUF header (arrays are skipped). ValueError if not GGUF."""
    with path.open("rb") as src:
        if src.read(4) != b"GGUF":
            raise ValueError("not a GGUF file (bad magic)")
        version = _read(src, "<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        _tensors, count = _read(src, "<Q"), _read(src, "<Q")
        meta = {}
        for _ in range(count):
            key = src.read(_read(src, "<Q")).decode("utf-8", "replace")
            meta[key] = _read_value(src, _read(src, "<I"))
        return meta


def _kv_cache_bytes(meta: dict[str, Any], context: int) -> int:
    """f16 K and V for every layer and position; a generous guess when keys are missing."""
    arch = meta.get("general.architecture", "")
    layers = meta.get(f"{arch}.block_count") or 32
    heads = meta.get(f"{arch}.attention.head_count") or 32
    kv_heads = meta.get(f"{arch}.attention.head_count_kv") or heads
    width = meta.get(f"{arch}.embedding_length") or 4096
    head_dim = meta.get(f"{arch}.attention.key_length") or width // heads
    return 2 * 2 * layers * kv_heads * head_dim * context


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(path: Path, meta: dict[str, Any], context: int) -> None:
    available = _available_memory()
    if available is None:
        return
    needed = int(path.stat().st_size * 1.2) + _kv_cache_bytes(meta, context)
    if needed > available:
        raise ModelError(
            f"{path}: the model needs about {needed / 2**30:.1f} GiB of memory with "
            f"n_ctx={context}, only {available / 2**30:.1f} GiB is available; free memory, "
            "lower PROMPT_DESCENT_N_CTX, or use a smaller local model"
        )
