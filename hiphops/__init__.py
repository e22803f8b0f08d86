"""Hiphops engine: events, the sensor language, the matcher and runs. No Kubernetes imports."""

__version__ = "0.1.0"
