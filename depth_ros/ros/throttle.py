"""Throttled logging for nodes: one line per kind of problem per period, with the count of the ones not logged."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable

LOG_PERIOD = 5.0  # s between two logs of the same problem
# The values in a problem's text (finite numbers, quoted names): removed, what is left is the kind of problem logs
# are throttled by (a NaN stays: non-finite is a kind of its own).
_VALUES = re.compile(r"'[^']*'|[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def problem_kind(text: str) -> str:
    """``text`` without its values: one key for every occurrence of the same problem (e.g. stamps, sizes differ)."""
    return _VALUES.sub("#", text)


class ThrottledLog:
    """Logs through an rclpy logger at most once per :data:`LOG_PERIOD` per key; thread-safe.

    Args:
        logger: the node's logger (``node.get_logger()``).
    """

    def __init__(self, logger):
        self._logger = logger
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def _due(self, key: str, text: str) -> str | None:
        """``text`` to log (with the count of the same problems not logged since), or None if a problem with this
        ``key`` was logged less than LOG_PERIOD s ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_logged.get(key, -LOG_PERIOD) < LOG_PERIOD:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last_logged[key] = now
            suppressed = self._suppressed.pop(key, 0)
        return f"{text} ({suppressed} more like it not logged)" if suppressed else text

    def error(self, key: str, text: str) -> None:
        """Log ``text`` as an error unless ``key`` was logged within the period."""
        if (text := self._due(key, text)) is not None:
            self._logger.error(text)

    def warning(self, key: str, text: str) -> None:
        """Log ``text`` as a warning unless ``key`` was logged within the period."""
        if (text := self._due(key, text)) is not None:
            self._logger.warning(text)

    def problem(self, what: str, problem: str, warning: bool = False) -> None:
        """Log ``dropping <what>: <problem>``, throttled per kind of problem (:func:`problem_kind`)."""
        (self.warning if warning else self.error)(f"{what}: {problem_kind(problem)}", f"dropping {what}: {problem}")

    def guard(self, what: str, callback: Callable, on_error: Callable | None = None) -> Callable:
        """``callback`` made safe for the executor: an exception it raises is logged as an error (throttled per
        ``what`` and exception type) instead of ending the node's spin.

        Args:
            what: the callback's name in the log (e.g. ``"image callback"``).
            callback: a subscription, timer, service or set-parameters callback.
            on_error: called as ``on_error(reason, *args)`` after a failure, its result returned to rclpy (a
                service's response, a SetParametersResult); None: the callback returns None.
        """

        @functools.wraps(callback)
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as error:  # any failure: this message or request only, never the node
                reason = f"{what} failed: {type(error).__name__}: {error}"
                self.error(f"{what}: {type(error).__name__}", reason)
                return None if on_error is None else on_error(reason, *args)

        return guarded


def trigger_failed(reason: str, _request, response):
    """A std_srvs/Trigger ``response`` answering ``success: false`` with ``reason`` (an ``on_error`` of
    :meth:`ThrottledLog.guard`)."""
    response.success, response.message = False, reason
    return response
