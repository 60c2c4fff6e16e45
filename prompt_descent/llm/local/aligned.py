"""A llama.cpp model whose answer to a prompt does not depend on the calls before it.

llama-cpp-python reuses the KV cache of the longest token prefix that a new prompt shares
with the previous call, and evaluates the rest as one batch. But llama.cpp's CPU kernels
take other paths for batches of other sizes: a prompt whose last few tokens are evaluated
alone gets other logits than the same prompt evaluated whole (0.3 apart for
qwen2.5-coder-0.5b on an AMD EPYC), and at temperature 0 five of sixteen prompts answered
differently when asked twice in a row. Here a prompt is always evaluated in chunks of
`n_batch` tokens counted from its first token, and the cache is reused only up to a chunk
boundary that an earlier prompt filled with whole chunks, so that every chunk is computed
from the same tokens, in the same shape, as in a fresh evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llama_cpp import Llama

CHUNK_TOKENS = 64  # what a reused prefix may lose; small enough to keep most of the reuse


class ChunkAlignedLlama(Llama):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, n_batch=CHUNK_TOKENS, n_ubatch=CHUNK_TOKENS, **kwargs)
        self._whole_chunks_end = 0  # the cached prompt's tokens that lie in whole chunks

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
        tokens = list(tokens)
        if kwargs.get("reset", True):
            shared = Llama.longest_token_prefix(self._input_ids.tolist(), tokens)
            # At least the prompt's last token is evaluated, for the logits to sample from.
            reusable = min(shared, self._whole_chunks_end, len(tokens) - 1)
            self.n_tokens = reusable - reusable % self.n_batch
            self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
            self._whole_chunks_end = len(tokens) - len(tokens) % self.n_batch
        return super().generate(tokens, *args, **kwargs)
