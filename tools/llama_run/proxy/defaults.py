"""The proxy's defaults and the names of its modes: constants only, so `llama-run --help` (which builds the
proxy's flags) imports nothing else for them."""

DEFAULT_PROXY_PORT = 11435
# A 128k-token prompt is ~0.5-1 MB of JSON (text or token ids); 32 MiB leaves room for worst-case escaping.
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
# No byte may come for this long (a long prefill, a long non-streamed answer): llama-server's own default.
DEFAULT_READ_TIMEOUT = 3600.0
DEFAULT_CLIENT_TIMEOUT = 60.0  # request head and body, and a client that stops reading
DEFAULT_RETENTION_DAYS = 90.0
DEFAULT_RECENT = 200  # finished requests kept in memory for /proxy/requests
INJECT_MODES = ("auto", "always", "never")  # config.InjectMode's values
