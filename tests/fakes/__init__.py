"""Fakes of Google Cloud services that speak the real wire protocols to the real clients."""
