"""The version of llama.cpp studio (both CLIs, result manifests, packaging)."""

__version__ = "0.2.0"
