"""Running: a run's lifecycle, Ctrl-C, child processes, the Prefect API, project defaults."""
