"""Batch engines: the Cloud Batch request builder and the engines that run it."""
