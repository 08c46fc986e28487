"""How both CLIs run a command: parse (bad input is one line), dispatch to the command's handler, and
turn exceptions into what a user should see: a single line and an ExitStatus."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, NoReturn, Optional

from .argtypes import split_extra_args
from .utils import SETUP_HINT, ExitStatus, UserError

# Our own code: a missing module here is a bug (a traceback helps), never "install a package".
_OWN_PACKAGES = frozenset({"tools", "tests"})


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `prog: error: message (see --help)`, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _is_third_party(module: Optional[str]) -> bool:
    top = (module or "").split(".")[0]
    if not top or top in _OWN_PACKAGES:
        return False
    return top not in getattr(sys, "stdlib_module_names", ())


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run one command; a UserError or a missing third-party package becomes one line on stderr."""
    try:
        return int(body())
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if not _is_third_party(exc.name):
            raise
        print(f"{prog}: error: missing Python package '{exc.name}': {SETUP_HINT}", file=sys.stderr)
        return ExitStatus.MISSING_PACKAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.OK  # `llama-run ps | head` closed the pipe: not an error


def main(prog: str, parser: argparse.ArgumentParser, argv: List[str]) -> int:
    """Parse `argv` (everything after `--` is kept for llama-server) and call the command's handler.

    Every subcommand sets `handler`, a function of the parsed namespace that returns an exit status;
    the namespace carries the extra llama-server flags as `extra_server_args`.
    """
    ours, extra = split_extra_args(argv)
    args = parser.parse_args(ours)
    args.extra_server_args = extra
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error("a command is required")
    return run_cli(prog, lambda: handler(args))
