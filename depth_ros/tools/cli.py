"""Shared behaviour of the command-line tools: one readable line and a non-zero exit on expected errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from depth_ros.checkpoints import CheckpointError

EXPECTED_ERRORS = (CheckpointError, ValueError, KeyError, OSError)

log = logging.getLogger(__name__)


class Skipped:
    """The bad items of a batch tool's run (process_bag's frames, infer's images): each is logged as a warning when
    it is skipped and the run goes on with the others; :meth:`check` then ends the run with one error naming them all
    (exit status 1 through :func:`run_cli`).

    Args:
        what: the kind of item, singular (``"frame"``, ``"image"``).

    Attributes:
        problems: one line per item skipped, naming it and its problem.
    """

    def __init__(self, what: str):
        self.what = what
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        """Skip one item: log ``skipping <what>: <problem>`` and remember it."""
        log.warning("skipping %s: %s", self.what, problem)
        self.problems.append(problem)

    def check(self, total: int, output: str | Path) -> None:
        """Raise ValueError ``<n> of <total> <what>s skipped (the others are in <output>): <problems>`` when any item
        was skipped; else nothing."""
        if self.problems:
            raise ValueError(f"{len(self.problems)} of {total} {self.what}s skipped (the others are in {output}): "
                             + "; ".join(self.problems))


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
