"""Storage: the DuckDB store and the writer that records a run behind it."""
