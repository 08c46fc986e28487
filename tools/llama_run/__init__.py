"""Run a llama-server and watch it live (rich TUI or plain lines)."""
