"""llama.cpp in this process: one loaded model per GGUF file, one chat completion at a time."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litellm
from pydantic import BaseModel

from prompt_descent.errors import ModelError
from prompt_descent.llm.local import PROVIDER
from prompt_descent.llm.local.gguf import check_fits, gguf_metadata
from prompt_descent.llm.local.weights import resolve
from prompt_descent.runtime import interrupt

INSTALL_RUNTIME = "pip install -e '.[local]'"


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
def buffer_types_as_configured() -> Iterator[None]:
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
            from prompt_descent.llm.local.aligned import ChunkAlignedLlama
        except ImportError:
            raise ModelError(
                f"local models need llama-cpp-python, which is not installed: {INSTALL_RUNTIME}"
            ) from None
        try:
            meta = gguf_metadata(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read it as a GGUF model ({exc})") from None
        context = n_ctx()
        check_fits(path, meta, context)
        threads = n_threads()
        try:
            with buffer_types_as_configured():
                llama = ChunkAlignedLlama(
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


# --------------------------------------------------------------------------- one chat completion

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
    # Calls share one llama.cpp context; serialising them also lets it reuse the KV cache
    # of the prefix shared with the previous call (the system prompt), see aligned.py.
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
