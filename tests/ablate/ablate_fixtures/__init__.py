"""A cheap seeded stage for the ablation tests (the upstream is tests/pipeline's `counter`)."""
