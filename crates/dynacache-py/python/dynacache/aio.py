"""``AsyncCache``: the cache for asyncio programs.

Every storage call runs on the Rust core's own threads with the GIL released; the coroutine
waits for it without holding the event loop, so thousands of lookups can be in flight from
one loop.

>>> import asyncio, dynacache
>>> async def main():
...     async with await dynacache.AsyncCache.open(in_memory=True) as cache:
...         await cache.set("k", [1, 2, 3])
...         return await cache.get("k")
>>> asyncio.run(main())
[1, 2, 3]
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, TypeVar

from ._native import Cache, Lease

T = TypeVar("T")

# Threads only wait (the GIL is released while the Rust core works): many of them are cheap.
# One pool per process: a pool inherited through os.fork() has no threads in the child.
_executor: Optional[ThreadPoolExecutor] = None
_executor_pid = 0


def _pool() -> ThreadPoolExecutor:
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        _executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dynacache-async")
        _executor_pid = os.getpid()
    return _executor


class AsyncCache:
    """The same cache as :class:`dynacache.Cache`, with awaitable methods.

    ``AsyncCache(**options)`` opens the table at once (a blocking call: do it at start-up);
    ``await AsyncCache.open(**options)`` opens it without blocking the loop. The options are
    those of :class:`dynacache.Cache`.
    """

    def __init__(self, *args: Any, _cache: Optional[Cache] = None, **kwargs: Any) -> None:
        self.sync: Cache = _cache if _cache is not None else Cache(*args, **kwargs)

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> "AsyncCache":
        """Opens the cache without blocking the event loop."""
        cache = await _call(functools.partial(Cache, *args, **kwargs))
        return cls(_cache=cache)

    async def get(self, key: str | bytes, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when it is missing or expired."""
        return await _call(self.sync.get, key, default)

    async def set(self, key: str | bytes, value: Any, ttl: Any = None) -> None:
        """Stores ``value`` under ``key`` (``ttl``: seconds, ``timedelta``, ``datetime``, or ``NEVER``)."""
        await _call(self.sync.set, key, value, ttl)

    async def add(self, key: str | bytes, value: Any, ttl: Any = None) -> bool:
        """Stores ``value`` only if ``key`` is missing or expired; whether it did."""
        return await _call(self.sync.add, key, value, ttl)

    async def delete(self, key: str | bytes) -> bool:
        """Deletes ``key``; whether a live value was there."""
        return await _call(self.sync.delete, key)

    async def has(self, key: str | bytes) -> bool:
        """Whether a live value is under ``key``."""
        return await _call(self.sync.has, key)

    async def get_many(self, keys: Iterable[str | bytes]) -> list:
        """The values under ``keys``, in order (``None`` for missing ones)."""
        return await _call(self.sync.get_many, list(keys))

    async def set_many(self, mapping: Mapping[str | bytes, Any] | Iterable[tuple], ttl: Any = None) -> None:
        """Stores several values in batches."""
        items = list(mapping.items()) if hasattr(mapping, "items") else list(mapping)
        await _call(self.sync.set_many, items, ttl)

    async def delete_many(self, keys: Iterable[str | bytes]) -> None:
        """Deletes several keys in batches."""
        await _call(self.sync.delete_many, list(keys))

    async def inc(self, key: str | bytes, delta: int = 1, ttl: Any = None) -> int:
        """Adds ``delta`` atomically (a missing key counts as 0); the new value."""
        return await _call(self.sync.inc, key, delta, ttl)

    async def dec(self, key: str | bytes, delta: int = 1, ttl: Any = None) -> int:
        """Subtracts ``delta`` atomically; the new value."""
        return await _call(self.sync.dec, key, delta, ttl)

    async def clear(self) -> int:
        """Deletes every entry of the namespace; how many."""
        return await _call(self.sync.clear)

    async def vacuum(self) -> int:
        """Deletes chunk items and objects no entry names (older than 15 minutes); how many."""
        return await _call(self.sync.vacuum)

    async def keys(self) -> list:
        """The live keys of the namespace."""
        return await _call(self.sync.keys)

    async def len(self) -> int:
        """How many live entries the namespace holds."""
        return await _call(self.sync.len)

    async def ttl(self, key: str | bytes) -> Optional[float]:
        """Seconds left (``math.inf``: never expires), or ``None`` when missing."""
        return await _call(self.sync.ttl, key)

    async def touch(self, key: str | bytes, ttl: Any) -> bool:
        """Gives a live value a new expiry; whether there was one."""
        return await _call(self.sync.touch, key, ttl)

    async def get_or_set(self, key: str | bytes, factory: Callable[[], Any], ttl: Any = None) -> Any:
        """The value under ``key``, else ``factory()`` stored and returned, once per key in the
        process (and across the fleet with ``fleet_lease``). ``factory`` may be a coroutine
        function; it runs on this event loop."""
        if asyncio.iscoroutinefunction(factory):
            loop = asyncio.get_running_loop()

            def run_on_loop() -> Any:
                return asyncio.run_coroutine_threadsafe(factory(), loop).result()

            return await _call(self.sync.get_or_set, key, run_on_loop, ttl)
        return await _call(self.sync.get_or_set, key, factory, ttl)

    async def lease(self, name: str | bytes, ttl: Any) -> Optional[Lease]:
        """Takes a lease if no one holds it."""
        return await _call(self.sync.lease, name, ttl)

    async def renew(self, lease: Lease, ttl: Any) -> bool:
        """Extends a held lease; ``False`` when it was lost."""
        return await _call(self.sync.renew, lease, ttl)

    async def release(self, lease: Lease) -> bool:
        """Gives a lease up."""
        return await _call(self.sync.release, lease)

    async def close(self) -> None:
        """Closes the cache."""
        await _call(self.sync.close)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self.sync.closed

    async def __aenter__(self) -> "AsyncCache":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"


def _call(fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    return asyncio.get_running_loop().run_in_executor(_pool(), functools.partial(fn, *args))
