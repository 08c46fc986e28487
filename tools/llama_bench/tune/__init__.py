"""`llama-bench autotune`: the fastest llama-server flags for this machine, model and workload."""
