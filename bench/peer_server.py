"""One llama-cpp-python OpenAI-compatible server for bench/peers.py, counting requests.

Every method of the peer bench calls the embedded model through a server like this one,
so all of them see the same weights and sampling. Each method sends its own API key;
`GET /counts` returns the chat completions served per key, which is the calls figure
of the bench (the server's own count, not the methods').

    python bench/peer_server.py --model task=/path/model.gguf --port 8101

Runs in the project's venv with llama-cpp-python's server extras on PYTHONPATH
(bench/peers.py installs them beside, not into, the venv). The weights load with the
buffer types `prompt_descent.llm.local.llamacpp` chooses for this CPU (plain buffers on AMX).
"""

from __future__ import annotations

import argparse
from collections import Counter

import uvicorn
from fastapi import Request
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ModelSettings, ServerSettings

from prompt_descent.llm.local.llamacpp import buffer_types_as_configured


def counting_app(alias: str, path: str, n_ctx: int, threads: int):
    served: Counter[str] = Counter()
    with buffer_types_as_configured():  # the model loads inside create_app
        app = create_app(
            server_settings=ServerSettings(),
            model_settings=[
                ModelSettings(
                    model=path,
                    model_alias=alias,
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                )
            ],
        )

    @app.middleware("http")
    async def count(request: Request, call_next):
        if request.method == "POST" and request.url.path.endswith("/chat/completions"):
            key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            served[key or "-"] += 1
        return await call_next(request)

    @app.get("/counts")
    async def counts() -> dict[str, int]:
        return dict(served)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ALIAS=PATH of a GGUF file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    alias, _, path = args.model.partition("=")
    app = counting_app(alias, path, args.n_ctx, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
