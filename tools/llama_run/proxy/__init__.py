"""The token-meter proxy: a transparent HTTP proxy in front of one llama-server (or any OpenAI-compatible
server) that meters every completion request per client, live and in a SQLite history."""
