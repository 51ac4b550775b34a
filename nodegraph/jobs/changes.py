"""A change counter that threads and asyncio tasks can wait on.

The queue bumps it on every job change (an event stored, a status changed); a follower remembers
the version it has seen, reads what is new, then waits for the version to move. No polling: a
thread waits on a Condition, an asyncio task on a future its loop resolves.
"""

from __future__ import annotations

import asyncio
import threading


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Changes:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._futures: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def bump(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()
            waiting = list(self._futures)
        for loop, future in waiting:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                pass

    def wait(self, seen: int, timeout: float | None = None) -> bool:
        """Block until the version differs from `seen` (True) or `timeout` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._version != seen, timeout)

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """`wait` for a coroutine, without holding a thread while it waits."""
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._cond:
            if self._version != seen:
                return True
            self._futures.add(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._cond:
                self._futures.discard(entry)
