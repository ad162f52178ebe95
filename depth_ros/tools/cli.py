"""Shared behaviour of the command-line tools: one readable line and a non-zero exit on expected errors."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def staged_output(output: str | Path) -> Iterator[Path]:
    """Write ``output`` atomically: yields a path (not yet existing) inside a temporary folder beside ``output``;
    when the block ends normally, what was written there is renamed to ``output``; on an error or Ctrl-C it is
    removed, so no half-written result ever carries the final name.

    Raises:
        FileExistsError: ``output`` exists (checked before anything is written).
    """
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output}: already exists; remove it or choose another output")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        yield staging / output.name
        (staging / output.name).rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
