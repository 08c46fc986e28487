"""Server lifecycle, Prometheus monitoring and benchmarking for llama-server (shared by both CLIs)."""
