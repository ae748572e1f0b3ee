"""Shared plumbing for the operator scripts: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def positive_int(text: str) -> int:
    """argparse type for counts such as --k and --batch-size: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run_cli(main: Callable[[], int]) -> int:
    """Run ``main``; known operator mistakes become ``error: ...`` and exit status 2."""
    from recommender.errors import LookalikeError

    try:
        return main()
    except LookalikeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted.", code=130)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
