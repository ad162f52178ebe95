"""Shared behaviour of the command-line tools: one readable line and a non-zero exit on expected errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from depth_ros.checkpoints import CheckpointError

EXPECTED_ERRORS = (CheckpointError, ValueError, KeyError, OSError)


def run_cli(name: str, main: Callable[[], int | None]) -> int:
    """Run ``main`` and turn expected errors into ``<name>: error: <message>`` on stderr with exit code 1.

    Bad user input (missing files, bad checkpoints, malformed data or arguments) raises one of
    :data:`EXPECTED_ERRORS` in the library; anything else is a bug and keeps its traceback. Ctrl-C exits with 130.
    """
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s")
    try:
        return main() or 0
    except EXPECTED_ERRORS as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"{name}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
