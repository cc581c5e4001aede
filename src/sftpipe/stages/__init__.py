"""Stages: one module per CLI verb, each with a typed `run(...) -> Result` core."""
