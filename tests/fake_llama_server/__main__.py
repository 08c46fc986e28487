"""Run the fake llama-server: `python -S tests/fake_llama_server/__main__.py ARGS` (what tests/bin/llama-server
does), `python -S tests/fake_llama_server ARGS` or `python -m tests.fake_llama_server ARGS`."""

import os
import sys

if __name__ == "__main__":
    # Start-up time matters (tests start many servers) and asyncio pulls in ssl, which nothing here
    # uses: asyncio runs without TLS support when `import ssl` fails. Only when run as the server,
    # so that importing the package (its unit tests) leaves ssl alone.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    if not __package__:
        # Run by path, sys.path[0] is this folder, where the package's modules (log, options, ...) would
        # shadow or be mistaken for top-level ones; the repo root takes its place, for the import below.
        here = os.path.dirname(os.path.realpath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
        sys.path.insert(0, os.path.dirname(os.path.dirname(here)))

from tests.fake_llama_server.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
