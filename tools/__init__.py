"""llama.cpp studio: tools to run, watch and benchmark llama.cpp's llama-server."""
