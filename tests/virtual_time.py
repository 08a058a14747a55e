"""Virtual time for asyncio, shared by the limiter tests (tests/client/test_limits.py) and the limiter simulator
(bench/limiter_sim.py): ``VirtualTimeLoop`` is an event loop whose clock jumps to the next timer instead of waiting,
so many tasks and thousands of simulated seconds run in milliseconds, deterministically."""

from __future__ import annotations

import asyncio
import selectors

__all__ = ["FakeClock", "VirtualTimeLoop"]


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _VirtualSelector(selectors.BaseSelector):
    """Never blocks: when nothing is ready, it advances the virtual clock by the loop's timeout."""

    def __init__(self, clock: FakeClock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def select(self, timeout=None):
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("virtual-time deadlock: nothing is scheduled and nothing can wake the loop")
        self._clock.now += max(0.0, timeout)
        return []

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = FakeClock()
        super().__init__(_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now
