"""One place that turns exceptions into what a CLI user should see: a single line and an exit code."""

from __future__ import annotations

import sys
from typing import Callable

from .utils import SETUP_HINT, UserError


def run_cli(prog: str, body: Callable[[], int]) -> int:
    try:
        return int(body())
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        print(f"{prog}: error: missing Python package '{exc.name}': {SETUP_HINT}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0  # `llama-run ps | head` closed the pipe: not an error
