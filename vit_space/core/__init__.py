"""Plumbing every stage uses and that uses no stage: one-line input errors, atomic writes,
output paths, malloc settings."""
