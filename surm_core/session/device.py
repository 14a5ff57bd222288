"""The device heavy work runs on, shared by everyone using this server: one job at a time (a
fine-tune now; a search may join the same line), the others wait in arrival order.

>>> line = DeviceLine()
>>> line.join("a"); line.join("b")
>>> line.position("a"), line.position("b")
(0, 1)
>>> line.leave("a"); line.position("b")
0
"""
from __future__ import annotations

import threading


class DeviceLine:
    """A first-come, first-served line for one device; the first in line holds the device."""

    def __init__(self):
        self._changed = threading.Condition()
        self._line: list = []

    def join(self, who) -> None:
        with self._changed:
            if who in self._line:
                raise ValueError(f"{who!r} is already in line for the device")
            self._line.append(who)

    def position(self, who) -> int | None:
        """0 while ``who`` holds the device, ``k`` with ``k`` jobs ahead of it, ``None`` once out of line."""
        with self._changed:
            return self._line.index(who) if who in self._line else None

    def wait_turn(self, who, cancelled: threading.Event) -> bool:
        """Block until ``who`` holds the device (True), or ``cancelled`` is set (False; it left the line)."""
        with self._changed:
            while self._line and self._line[0] != who:
                if cancelled.is_set():
                    break
                # the wait ends early when the line moves; the timeout notices a cancellation
                self._changed.wait(0.2)
            if self._line and self._line[0] == who and not cancelled.is_set():
                return True
        self.leave(who)
        return False

    def leave(self, who) -> None:
        with self._changed:
            if who in self._line:
                self._line.remove(who)
                self._changed.notify_all()


#: This server's device (the CPU, or its first GPU): fine-tunes started from the app wait here.
DEVICE = DeviceLine()
