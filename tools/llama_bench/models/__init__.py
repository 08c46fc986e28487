"""Model files: where they come from, what a GGUF says about itself, whether it fits, where users keep them."""
