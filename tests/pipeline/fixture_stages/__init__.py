"""Tiny real stages for the runner tests: a Lightning regression and a stage that consumes it."""
