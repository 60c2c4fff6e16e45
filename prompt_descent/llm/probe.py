"""Does a local model load and generate on this machine? Asked in a child process.

llama.cpp can crash the whole process on some CPUs (a segfault in a CPU-specific
kernel), which no `try` survives. So the question is put to a child that makes one
tiny completion through litellm, the path every run takes, and the parent reads its
exit: a crash becomes one line naming the model, the signal and the CPU's flags.

    python -m prompt_descent.llm.probe local/qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pydantic import BaseModel

PROBE_SECONDS = 300  # a first use joins and hashes the 1.1 GB weights before loading
# the flags of the CPU features llama.cpp picks its kernels by
_KERNEL_FLAGS = ("avx2", "avx512", "amx", "avx_vnni", "f16c", "fma")


class ProbeResult(BaseModel):
    model: str
    generates: bool
    problem: str | None = None  # one line, when it does not


def kernel_flags() -> str:
    """The CPU flags that decide llama.cpp's kernels."""
    from prompt_descent.llm.local.llamacpp import cpu_flags

    kept = sorted(f for f in cpu_flags() if f.startswith(_KERNEL_FLAGS))
    return " ".join(kept) or "none of " + "/".join(_KERNEL_FLAGS)


def describe_exit(model: str, returncode: int, stderr: str) -> str:
    """One line for a probe that did not exit 0."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return (
            f"{model} crashed ({name}) in its first completion on this CPU "
            f"(flags: {kernel_flags()}); try PROMPT_DESCENT_EXTRA_BUFFERS=off, or "
            "rebuild llama-cpp-python on this machine"
        )
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit code {returncode}"
    return f"{model} does not generate: {last.removeprefix('error: ')}"


def probe(model: str, timeout: float = PROBE_SECONDS) -> ProbeResult:
    """Load `model` and make one 2-token completion in a child process."""
    try:
        child = subprocess.run(
            [sys.executable, "-m", "prompt_descent.llm.probe", model],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ | {"PYTHONFAULTHANDLER": ""},  # a crash is a signal, not a dump
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(
            model=model, generates=False, problem=f"{model} gave no completion in {timeout:.0f} s"
        )
    if child.returncode == 0:
        return ProbeResult(model=model, generates=True)
    problem = describe_exit(model, child.returncode, child.stderr)
    return ProbeResult(model=model, generates=False, problem=problem)


def _complete_once(model: str) -> int:
    import litellm

    from prompt_descent.errors import UserError
    from prompt_descent.llm.local import llamacpp, provider

    provider.register()
    try:
        litellm.completion(
            model=model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=2
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    llamacpp.close_all()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.exit(_complete_once(sys.argv[1]))
