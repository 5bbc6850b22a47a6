"""Waiting out an unreachable Redis: one doubling delay, used by every retry loop."""

import time


class Backoff:
    """Delays that double from ``first_s`` up to ``cap_s``; ``reset`` after a success."""

    def __init__(self, first_s: float, cap_s: float) -> None:
        self._first_s = first_s
        self._cap_s = cap_s
        self._next_s = first_s

    def next_delay(self) -> float:
        delay, self._next_s = self._next_s, min(self._next_s * 2, self._cap_s)
        return delay

    def sleep(self) -> float:
        """Sleep for the next delay (blocking); returns how long it slept."""
        delay = self.next_delay()
        time.sleep(delay)
        return delay

    def reset(self) -> None:
        self._next_s = self._first_s
