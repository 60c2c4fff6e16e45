"""prompt-descent: prompt optimization by text-gradient descent, as Prefect flows.

The Python API (all synchronous; in async code await the flows in `flows/` directly):

    import prompt_descent as pd
    summary = pd.optimize("examples/qa_pairs.yaml")        # -> RunSummary
    scores = pd.evaluate("Answer briefly.", "data.jsonl")   # -> SplitScore
    entry = pd.load_prompt("qa-pairs")                      # -> RegisteredPrompt
    outputs = pd.run_prompt("qa-pairs", ["some text"])      # -> [Output]
    pd.expand_qa("texts.jsonl", output="qa.jsonl")          # -> ExpandSummary

Names are imported on first use, so `import prompt_descent` stays fast (Prefect and
litellm take seconds to import).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "optimize": "prompt_descent.api",
    "evaluate": "prompt_descent.api",
    "run_prompt": "prompt_descent.api",
    "expand_qa": "prompt_descent.api",
    "load_prompt": "prompt_descent.features.registry",
    "list_prompts": "prompt_descent.features.registry",
    "register_prompt": "prompt_descent.features.registry",
    "import_prompt": "prompt_descent.features.registry",
    "export_prompt": "prompt_descent.features.registry",
    "RegisteredPrompt": "prompt_descent.features.registry",
    "Prompt": "prompt_descent.core.config",
    "RunConfig": "prompt_descent.core.config",
    "DatasetSpec": "prompt_descent.core.config",
    "MetricSpec": "prompt_descent.core.config",
    "ModelSettings": "prompt_descent.core.config",
    "SplitScore": "prompt_descent.core.config",
    "UserError": "prompt_descent.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prompt_descent' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
