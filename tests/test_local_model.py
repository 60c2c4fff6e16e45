"""The embedded local model through litellm, as the rest of the project calls it.

These tests run the real llama.cpp runtime and real weights: CI installs `.[local]`.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported

import asyncio
import json
import shutil
from pathlib import Path

import litellm
import pytest

from prompt_descent.errors import ModelError
from prompt_descent.llm.local import llamacpp, provider, weights
from prompt_descent.llm.probe import describe_exit, probe

SMALL = "local/smollm2-135m-instruct"
NAMED = [
    "local/qwen2.5-coder-1.5b-instruct",
    "local/qwen2.5-coder-0.5b-instruct",
    "local/smollm2-135m-instruct",
]
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    provider.register()


def _small_gguf() -> Path:
    return weights.resolve(SMALL)


def _model_error(model: str, **params: object) -> ModelError:
    with pytest.raises(ModelError) as caught:
        litellm.completion(model=model, messages=HELLO, max_tokens=4, **params)
    message = str(caught.value)
    assert "\n" not in message, message
    return caught.value


def test_describe_models_lists_the_named_models() -> None:
    models = weights.describe_models()
    assert [m.name for m in models] == NAMED
    for m in models:
        assert m.file.endswith(".gguf") and m.size_bytes > 0
        assert m.verified <= (m.path is not None)


def test_unknown_name_lists_the_known_models() -> None:
    message = str(_model_error("local/llama-70b"))
    assert "local/llama-70b" in message
    for name in NAMED:
        assert name in message


def test_missing_gguf_path_is_a_model_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    assert str(missing) in str(_model_error(f"local/{missing}"))


def test_file_that_is_not_gguf_is_a_model_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    message = str(_model_error(f"local/{fake}"))
    assert str(fake) in message and "GGUF" in message


def test_truncated_gguf_fails_to_load_with_a_model_error(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with _small_gguf().open("rb") as src:
        truncated.write_bytes(src.read(10 * 1024 * 1024))  # header intact, tensors cut off
    message = str(_model_error(f"local/{truncated}"))
    assert str(truncated) in message and "could not load" in message


def test_model_too_big_for_memory_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy.gguf"  # a path of its own: not the already-loaded model
    shutil.copyfile(_small_gguf(), copy)
    monkeypatch.setenv("PROMPT_DESCENT_N_CTX", str(50_000_000))  # a KV cache of ~1 TiB
    assert "memory" in str(_model_error(f"local/{copy}"))


def test_corrupt_cached_weights_are_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPT_DESCENT_MODEL_DIR", str(tmp_path))
    spec = weights.MODELS["qwen2.5-coder-0.5b-instruct"]
    corrupt = tmp_path / spec.file
    with corrupt.open("wb") as out:
        out.truncate(spec.size_bytes)  # right size (sparse zeros), wrong sha256
    message = str(_model_error(f"local/{spec.name}"))
    assert str(corrupt) in message and "sha256" in message
    assert corrupt.exists() and not list(tmp_path.glob("*.sha256"))


def test_real_completion_has_content_usage_and_zero_cost() -> None:
    response = litellm.completion(model=SMALL, messages=HELLO, max_tokens=16, temperature=0)
    assert response.choices[0].message.content.strip()
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert litellm.completion_cost(completion_response=response) == 0


def test_same_call_gives_the_same_answer_whatever_ran_before() -> None:
    """llama.cpp's kernels differ by batch size, and the KV cache of the previous call is
    reused: before chunk-aligned reuse, this test failed on an AMD EPYC, where 5 of 16 such
    calls on qwen2.5-coder-0.5b answered otherwise when asked twice in a row (first a long
    batch, then the last token alone), and in CI smollm2-135m did after earlier calls."""
    model = "local/qwen2.5-coder-0.5b-instruct"
    system = "You answer briefly. " * 40  # a shared prefix longer than one chunk
    questions = ["Name a colour and say why you like it.", "Say something surprising."]
    for params in ({"temperature": 0}, {"temperature": 0.8, "top_p": 0.9}):
        for question in questions:
            for messages in (
                [{"role": "user", "content": question}],
                [{"role": "system", "content": system}, {"role": "user", "content": question}],
            ):
                answers = []
                for before in ("Count.", None, question[:12]):
                    if before:
                        other = messages[:-1] + [{"role": "user", "content": before}]
                        litellm.completion(model=model, messages=other, max_tokens=4, **params)
                    response = litellm.completion(
                        model=model, messages=messages, max_tokens=32, **params
                    )
                    answers.append(response.choices[0].message.content)
                assert len(set(answers)) == 1, (params, messages[-1], answers)


def test_json_object_response_parses() -> None:
    messages = [
        {"role": "system", "content": "Reply in JSON."},
        {"role": "user", "content": 'Return {"system": "...", "template": "..."} for a greeting.'},
    ]
    response = litellm.completion(
        model=SMALL,
        messages=messages,
        max_tokens=128,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_concurrent_async_calls_share_one_model() -> None:
    async def both() -> list[litellm.ModelResponse]:
        calls = [
            litellm.acompletion(
                model=SMALL, messages=[{"role": "user", "content": q}], max_tokens=8
            )
            for q in ("Name a colour.", "Name a fruit.")
        ]
        return await asyncio.gather(*calls)

    for response in asyncio.run(both()):
        assert response.choices[0].message.content.strip()


def test_prompt_longer_than_the_context_is_a_context_window_error() -> None:
    long = [{"role": "user", "content": "word " * (llamacpp.n_ctx() + 100)}]
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(model=SMALL, messages=long, max_tokens=4)


# --- on this CPU: the AMX segfault's guard, and the probe that finds such crashes -----------


def test_extra_buffer_types_are_off_on_a_cpu_with_amx_and_on_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMPT_DESCENT_EXTRA_BUFFERS", raising=False)
    monkeypatch.setattr(llamacpp, "cpu_flags", lambda: {"avx512f", "amx_tile", "amx_int8"})
    assert llamacpp.extra_buffer_types() is False
    monkeypatch.setattr(llamacpp, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert llamacpp.extra_buffer_types() is True
    monkeypatch.setenv("PROMPT_DESCENT_EXTRA_BUFFERS", "off")
    assert llamacpp.extra_buffer_types() is False
    monkeypatch.setenv("PROMPT_DESCENT_EXTRA_BUFFERS", "sometimes")
    with pytest.raises(ModelError, match="PROMPT_DESCENT_EXTRA_BUFFERS"):
        llamacpp.extra_buffer_types()


def test_the_probe_sees_a_model_generate_with_plain_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMPT_DESCENT_EXTRA_BUFFERS", "off")  # what AMX CPUs run
    result = probe(SMALL)
    assert result.generates, result.problem


def test_with_extra_buffers_the_probe_generates_or_names_the_crash_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Elsewhere the model generates; on an AMX CPU llama.cpp may segfault (llama.cpp
    #20824), and the probe must turn that into one line that says what to set."""
    monkeypatch.setenv("PROMPT_DESCENT_EXTRA_BUFFERS", "on")
    result = probe(SMALL)
    if not any(flag.startswith("amx") for flag in llamacpp.cpu_flags()):
        assert result.generates, result.problem
    elif not result.generates:
        assert result.problem is not None and "\n" not in result.problem
        assert "SIGSEGV" in result.problem and "PROMPT_DESCENT_EXTRA_BUFFERS=off" in result.problem


def test_the_probe_reports_a_broken_setup_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_DESCENT_N_CTX", "12")
    result = probe(SMALL)
    assert not result.generates
    assert result.problem is not None and "\n" not in result.problem
    assert SMALL in result.problem and "PROMPT_DESCENT_N_CTX=12" in result.problem


def test_a_crash_is_one_line_naming_the_model_the_signal_and_the_cpu_flags() -> None:
    line = describe_exit(SMALL, -11, "Fatal Python error: Segmentation fault\n" * 300)
    assert "\n" not in line
    assert SMALL in line and "SIGSEGV" in line and "flags:" in line
    assert "Fatal Python error" not in line


def test_models_shows_that_each_installed_model_generates() -> None:
    from typer.testing import CliRunner

    from prompt_descent import cli

    result = CliRunner().invoke(cli.app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "generates" in result.output
    row = next(line for line in result.output.splitlines() if SMALL in line)
    assert row.split("│")[4].strip() == "yes", row
