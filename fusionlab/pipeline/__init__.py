"""The pipeline runner: plan which stages to run or skip, run each in its own process, and
record what each produced in a manifest (see docs/architecture.md)."""
