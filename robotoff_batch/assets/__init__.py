"""Dagster assets, generated per job type."""
