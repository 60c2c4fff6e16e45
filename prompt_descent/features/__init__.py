"""The features built on optimized prompts: the registry, serving a prompt, QA expansion."""
