"""How both CLIs run a command: parse (bad input is one line), dispatch to the command's handler, and
turn exceptions into what a user should see: a single line and an ExitStatus."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, NoReturn, Optional

from . import stdio, stopping
from .argtypes import split_extra_args
from .utils import SETUP_HINT, ExitStatus, UserError

# Our own code: a missing module here is a bug (a traceback helps), never "install a package".
_OWN_PACKAGES = frozenset({"tools", "tests"})


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `prog: error: message (see --help)`, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        # "argument --port/-p: invalid port 'x'" -> "--port: invalid port 'x'"
        if message.startswith("argument "):
            name, sep, rest = message[len("argument ") :].partition(": ")
            if sep:
                message = f"{name.split('/')[0]}: {rest}"
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _is_third_party(module: Optional[str]) -> bool:
    top = (module or "").split(".")[0]
    if not top or top in _OWN_PACKAGES:
        return False
    return top not in getattr(sys, "stdlib_module_names", ())


def _err(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # stderr is gone too: the exit status is all that is left


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run one command; a UserError or a missing third-party package becomes one line on stderr.

    When standard output was lost on the way (closed, a broken pipe, a full disk), the command still ran
    to the end; it then exits with OUTPUT_ERROR (unless it already failed) and says so on stderr."""
    code = _run(prog, body)
    lost = stdio.stdout_lost()
    if lost:
        _err(f"{prog}: error: standard output was lost ({lost}); the command still ran to the end")
        if code == ExitStatus.OK:
            code = ExitStatus.OUTPUT_ERROR
    return code


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return int(body())
    except UserError as exc:
        _err(f"{prog}: error: {exc}")
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if not _is_third_party(exc.name):
            raise
        _err(f"{prog}: error: missing Python package '{exc.name}': {SETUP_HINT}")
        return ExitStatus.MISSING_PACKAGE
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP (stopping.StopRequested)
        _err(f"{prog}: interrupted")
        return ExitStatus.INTERRUPTED


def main(prog: str, build_parser: Callable[[], argparse.ArgumentParser], argv: List[str]) -> int:
    """Parse `argv` (everything after `--` is kept for llama-server) and call the command's handler.

    Every subcommand sets `handler`, a function of the parsed namespace that returns an exit status;
    the namespace carries the extra llama-server flags as `extra_server_args`. Building the parser reads
    settings (.env), so it runs inside run_cli too: a bad setting is one line, like a bad flag.
    """
    stdio.install()
    stopping.install()
    return run_cli(prog, lambda: _dispatch(build_parser, argv))


def _dispatch(build_parser: Callable[[], argparse.ArgumentParser], argv: List[str]) -> int:
    parser = build_parser()
    ours, extra = split_extra_args(argv)
    args = parser.parse_args(ours)
    args.extra_server_args = extra
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error("a command is required")
    return int(handler(args))
