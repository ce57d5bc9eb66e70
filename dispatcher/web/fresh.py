"""Figures many people watch at once (the dashboard), computed once for all of them every few seconds.

Twenty operators refreshing the dashboard every 5 s would each count a running million-message
blast; instead one count runs at a time, and while the next is being made everyone is shown the
last one (at most `every` seconds plus one count old). Only the first visitor of a process waits.
A count that took long waits longer before the next (four times as long): however large the
blasts, the figures never keep more than a fifth of a core busy beside the sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

# The next value is made no sooner than this many times as long as the last took to make.
RESTING = 4


class Fresh:
    """A value made again at most once per `every` seconds, served as it was while it is being made again."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        """`every` ≤ 0: made again for every caller (nothing shared)."""
        self.every, self.clock = every, clock
        self._value: Any = None
        self._made_at: float | None = None
        self._took = 0.0
        self._making: asyncio.Task | None = None

    async def get(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """The value: `make()` awaited when there is none yet (or nothing is shared), else the last one made."""
        if self.every <= 0:
            return await make()
        if self._made_at is None:
            if self._making is None:
                self._making = asyncio.ensure_future(self._remake(make))
            await asyncio.shield(self._making)
        elif self.clock() - self._made_at >= max(self.every, RESTING * self._took) and self._making is None:
            self._making = asyncio.ensure_future(self._remake(make))
        return self._value

    async def _remake(self, make: Callable[[], Awaitable[Any]]) -> None:
        started = self.clock()
        try:
            self._value = await make()
            self._made_at = self.clock()
            self._took = self._made_at - started
        finally:
            self._making = None
