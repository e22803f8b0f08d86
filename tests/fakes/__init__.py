"""Fake servers that speak the APIs of the tools tasks act on, for tests on loopback."""
