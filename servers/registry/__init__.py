"""Registry: workflows, each linked to its runs and its latest run."""
