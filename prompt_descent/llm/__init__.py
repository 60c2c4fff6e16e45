"""The LLM layer: the litellm gateway, structured output, the embedded local model."""
