"""Shared plumbing for the operator scripts: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(main: Callable[[], int]) -> int:
    """Run ``main``; known operator mistakes become ``error: ...`` and exit status 2."""
    from recommender import BuildError, CatalogueError, CatalogueIndexError, ModelLoadError

    try:
        return main()
    except (BuildError, CatalogueError, CatalogueIndexError, ModelLoadError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted.", code=130)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
