"""`python -m tools.llama_run.proxy --upstream URL [--host H] [--port P] ...`: the proxy on its own (what
`llama-run proxy` and ManagedProxy run); errors are one line, like every command of ours."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tools.llama_bench.entry import ArgumentParser, main as run_main

from .args import add_proxy_args, proxy_command

PROG = "llama-proxy"


def set_process_name(name: str) -> None:
    """`ps` shows `llama-proxy` rather than python3 (Linux; best effort)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/comm", "w", encoding="utf-8") as fh:
                fh.write(name)
        except OSError:
            pass


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="The token-meter proxy in front of one server.")
    add_proxy_args(parser)
    parser.set_defaults(handler=proxy_command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    set_process_name(PROG)
    return run_main(PROG, build_parser, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
