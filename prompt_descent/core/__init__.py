"""The optimizer core: config types, data, batching, the early-stop chance, context
fitting, and what the steps return."""
