"""Predictions: Robotoff's ``prediction`` table (import once per batch job) and the embedded
PostgreSQL used when no Robotoff database is configured."""
