"""Tooling for the project's tests and benchmarks, not for its users: ``fuzz`` (seeded malformed image files)."""
