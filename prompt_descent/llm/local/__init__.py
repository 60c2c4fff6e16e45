"""The embedded local model: llama.cpp behind litellm's custom-provider interface.

`provider.register()` makes `litellm.completion(model="local/<name>")` run a GGUF model
in this process. `weights` finds and verifies a named model's file, `gguf` reads its
header to check it fits in memory, `llamacpp` loads it and runs one chat completion.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported

PROVIDER = "local"
