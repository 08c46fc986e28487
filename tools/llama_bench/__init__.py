"""Server lifecycle, Prometheus monitoring, benchmarking and tuning for llama-server."""

__version__ = "0.1.0"
