"""A drop-in for aiohttp-client-cache's DynamoDB backend, on the Rust core.

Change the import and nothing else::

    from aiohttp_client_cache import CachedSession
    from dynacache.aiohttp import DynamoDBBackend

    async with CachedSession(cache=DynamoDBBackend("aiohttp-cache", expire_after=300)) as s:
        await s.get("https://example.com/data.json")

Storage only: aiohttp-client-cache keeps its policy, serializer and ``secret_key`` signing.
What changes: no storage call holds the event loop (each runs on the Rust core's threads with
the GIL released), responses of any size (the peer skips those over 400 KB), and ``keys``,
``values``, ``size`` and ``clear`` read the namespace's metadata index instead of scanning the
table. Keys are laid out as the peer lays them out (``resp:KEY`` and ``redir:KEY``) in
dynacache's entry format, under the partition key ``key_attr_name``, except for the peer's
default ``k``, which dynacache's entries use for an attribute of their own: the partition key
is then ``key``, dynacache's default.

Arguments are the peer's. ``val_attr_name`` has no meaning here (values are dynacache entries,
whose payload attribute is always ``v``, the peer's default). ``create_if_not_exists`` is
honoured on DynamoDB Local and AWS; the embedded engine always creates its table, since
nothing else could. ``context`` (an aioboto3 resource context) gives its endpoint, region and
credentials once it has been entered; otherwise use ``endpoint_url``/``region_name``/keys, as
with boto3. Expired responses stay readable for ``stale_grace`` (default one day) after their
``expires`` (or after they are written, if later), so the peer can revalidate them, and are then misses, whatever DynamoDB's TTL
sweeper does.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, AsyncIterator, Optional, Union

try:
    from aiohttp_client_cache.backends.base import BaseCache, CacheBackend
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'dynacache.aiohttp needs aiohttp-client-cache: pip install "dynacache[aiohttp]"'
    ) from None

from . import _connect
from .aio import AsyncCache

__all__ = ["DynamoDBBackend", "DynamoDbCache"]

log = logging.getLogger(__name__)

# Options of the peer's BaseCache (its serializer and signing), not engine settings.
_SERIALIZER_OPTIONS = {"secret_key", "salt", "serializer"}
# Options of the peer's CacheBackend (policy), which reach the storage's kwargs too.
_POLICY_OPTIONS = {
    "expire_after", "urls_expire_after", "allowed_codes", "allowed_methods", "include_headers",
    "ignored_params", "autoclose", "cache_control", "filter_fn", "cache_name",
}


class DynamoDbCache(BaseCache):
    """The peer's ``DynamoDbCache``: one namespace of a table, with awaitable storage calls."""

    def __init__(
        self,
        table_name: str,
        namespace: str,
        key_attr_name: str = "k",
        val_attr_name: str = "v",
        create_if_not_exists: bool = False,
        context: Any = None,
        stale_grace: Union[int, float, dt.timedelta] = dt.timedelta(days=1),
        **kwargs: Any,
    ) -> None:
        serializer = {k: kwargs.pop(k) for k in list(kwargs) if k in _SERIALIZER_OPTIONS}
        for k in list(kwargs):
            if k in _POLICY_OPTIONS:
                kwargs.pop(k)
        super().__init__(**serializer)
        self.table_name = table_name
        self.namespace = namespace
        self.key_attr_name = key_attr_name
        self.val_attr_name = val_attr_name
        self.create_if_not_exists = create_if_not_exists
        self.context = context
        self.stale_grace = stale_grace if isinstance(stale_grace, dt.timedelta) else dt.timedelta(seconds=stale_grace)
        options = _connect.cache_options(getattr(context, "cls", None), strict=False, **kwargs)
        embedded = "endpoint_url" not in options and not options.get("aws") and not any(
            k in options for k in ("region", "profile", "credentials")
        )
        self._options = dict(
            table=table_name,
            namespace=namespace,
            # `k` (the peer's default) is an attribute of dynacache's own entries.
            key_attribute="key" if key_attr_name == "k" else key_attr_name,
            create_table=create_if_not_exists or embedded,
            **options,
        )
        self._cache: Optional[AsyncCache] = None

    async def _c(self) -> AsyncCache:
        # Opened on first use, without blocking the loop (the peer connects lazily too).
        if self._cache is None:
            self._cache = await AsyncCache.open(**self._options)
        return self._cache

    def _expiry(self, item: Any) -> Any:
        return _connect.stale_expiry(getattr(item, "expires", None), self.stale_grace)

    async def read(self, key: str) -> Any:
        stored = await (await self._c()).get(key)
        return self.deserialize(stored) if stored is not None else None

    async def write(self, key: str, item: Any) -> None:
        data = self.serialize(item)
        if data is None:
            return
        await (await self._c()).set(key, data, self._expiry(item))

    async def delete(self, key: str) -> None:
        await (await self._c()).delete(key)

    async def bulk_delete(self, keys: set) -> None:
        await (await self._c()).delete_many(list(keys))

    async def contains(self, key: str) -> bool:
        return await (await self._c()).has(key)

    async def clear(self) -> None:
        """Deletes every entry of this namespace (and nothing else in the table)."""
        await (await self._c()).clear()

    async def keys(self) -> AsyncIterator[str]:  # type: ignore[override]
        for key in await (await self._c()).keys():
            yield key

    async def values(self) -> AsyncIterator[Any]:  # type: ignore[override]
        cache = await self._c()
        keys = await cache.keys()
        for start in range(0, len(keys), 100):
            for stored in await cache.get_many(keys[start : start + 100]):
                if stored is not None:
                    yield self.deserialize(stored)

    async def size(self) -> int:
        return await (await self._c()).len()

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.close()
            self._cache = None


class DynamoDBBackend(CacheBackend):
    """The peer's ``DynamoDBBackend`` (responses and redirects), on dynacache's Rust core."""

    def __init__(
        self,
        cache_name: str = "aiohttp-cache",
        key_attr_name: str = "k",
        val_attr_name: str = "v",
        create_if_not_exists: bool = False,
        context: Any = None,
        **kwargs: Any,
    ) -> None:
        policy = {k: v for k, v in kwargs.items() if k in _POLICY_OPTIONS}
        super().__init__(cache_name=cache_name, **policy)
        self.responses = DynamoDbCache(
            cache_name, "resp", key_attr_name, val_attr_name, create_if_not_exists, context, **kwargs
        )
        self.redirects = DynamoDbCache(
            cache_name, "redir", key_attr_name, val_attr_name, create_if_not_exists, context, **kwargs
        )
