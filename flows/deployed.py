"""Entry flows for deployments: parameters a Prefect deployment can hold (JSON, a path).

`prefect.yaml` deploys `optimize` from here and `reoptimize` from flows/reoptimize.py.
A config path is relative to the working directory the worker runs the flow in, which
the deployment's pull step sets to the project directory.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.optimize import optimize_prompt
from prompt_descent.core.configfile import load_config
from prompt_descent.core.results import RunSummary


def _run_name() -> str:
    return f"optimize {Path(flow_run.parameters['config_path']).stem}"


@flow(name="optimize", flow_run_name=_run_name)
async def optimize_from_config(config_path: str) -> RunSummary:
    """Optimize the prompt of the run config (YAML) at `config_path` and register the best.

    The optimization runs in this flow run, not as a subflow of it, so that its task runs,
    logs and artifacts are on the run the user started."""
    return await optimize_prompt.fn(load_config(config_path))
