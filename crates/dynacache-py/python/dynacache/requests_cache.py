"""A drop-in for requests-cache's DynamoDB backend, on the Rust core.

Change the import and nothing else::

    from requests_cache import CachedSession
    from dynacache.requests_cache import DynamoDbCache

    session = CachedSession(backend=DynamoDbCache("http_cache"), expire_after=300)
    session.get("https://example.com/data.json")        # a miss, stored
    session.get("https://example.com/data.json").from_cache   # True

requests-cache keeps its own cache policy and its own serializers; this backend is storage
only, with what requests-cache's DynamoDB backend lacks: bodies of any size (compressed, split
over several items beyond DynamoDB's 400 KB item limit), redirects persisted (the peer keeps
them in memory), and ``len``, iteration, ``filter``, ``delete`` and ``clear`` that read only the
namespace's metadata index, never scan the table (``len`` is exact, not DynamoDB's 6-hourly
estimate).

Expiry: with ``ttl=True`` (the default) a response is kept until ``stale_grace`` (default one
day) after its ``expires`` or after it is written, whichever is later, so that requests-cache
can still revalidate it or serve it stale; checked on every read, with DynamoDB's TTL attribute as the sweeper; ``ttl=False``
keeps responses until deleted.

Arguments are requests-cache's: ``table_name``, ``namespace``, ``create_table``, ``ttl``,
``connection`` (a boto3 resource, client or session, whose endpoint, region and credentials are
used; boto3 itself is never imported), ``serializer`` and ``decode_content``, plus boto3's
``endpoint_url``, ``region_name`` and credentials, and :class:`dynacache.Cache` options
(``in_process_bytes``, ``secret_keys``, ``embedded_file``, ...). Without an endpoint, region,
credentials or connection, the table is in the embedded engine (the ``dynacache`` CLI's file).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Dict, Iterable, Iterator, Optional, Union

try:
    from requests_cache.backends.base import BaseCache, BaseStorage
    from requests_cache.serializers import pickle_serializer
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'dynacache.requests_cache needs requests-cache: pip install "dynacache[requests-cache]"'
    ) from None

from . import _connect
from ._native import Cache

__all__ = ["DynamoDbCache", "DynamoDbDict"]

log = logging.getLogger(__name__)

# Options of requests-cache's own BaseCache/BaseStorage, which are not engine settings.
_STORAGE_OPTIONS = {"serializer", "decode_content"}
# Options of requests-cache's sessions that reach a backend's constructor through
# CachedSession(backend="...", **kwargs) and mean nothing to storage.
_SESSION_OPTIONS = {
    "expire_after", "urls_expire_after", "cache_control", "allowable_codes",
    "allowable_methods", "always_revalidate", "ignored_parameters", "match_headers",
    "filter_fn", "key_fn", "stale_if_error", "stale_while_revalidate", "read_only",
    "disabled", "autoclose", "use_cache_dir", "use_temp", "use_memory", "wal", "fast_save",
    "busy_timeout", "read_capacity_units", "write_capacity_units", "cache_name",
}


class DynamoDbDict(BaseStorage):
    """A ``MutableMapping`` over one namespace of a dynacache table (requests-cache's storage)."""

    def __init__(
        self,
        table_name: str = "http_cache",
        namespace: str = "http_cache",
        connection: Any = None,
        create_table: bool = True,
        ttl: bool = True,
        stale_grace: Union[int, float, dt.timedelta] = dt.timedelta(days=1),
        **kwargs: Any,
    ) -> None:
        storage = {k: kwargs.pop(k) for k in list(kwargs) if k in _STORAGE_OPTIONS}
        # requests-cache's pickle pipeline by default (through cattrs, so stored responses
        # survive requests-cache upgrades); ``serializer=None`` stores values as they are.
        storage.setdefault("serializer", pickle_serializer)
        for k in list(kwargs):
            if k in _SESSION_OPTIONS:
                kwargs.pop(k)
        super().__init__(**storage)
        self.table_name = table_name
        self.namespace = namespace
        self.ttl = ttl
        self.stale_grace = stale_grace if isinstance(stale_grace, dt.timedelta) else dt.timedelta(seconds=stale_grace)
        options = _connect.cache_options(connection, strict=False, **kwargs)
        options["namespace"] = _namespace(namespace)
        self._cache = Cache(table=table_name, create_table=create_table, pickle=True, **options)

    @property
    def cache(self) -> Cache:
        """The :class:`dynacache.Cache` this storage is on."""
        return self._cache

    def _expiry(self, value: Any) -> Any:
        return _connect.stale_expiry(getattr(value, "expires", None) if self.ttl else None, self.stale_grace)

    def __getitem__(self, key: str) -> Any:
        stored = self._cache.get(key, _MISSING)
        if stored is _MISSING:
            raise KeyError(key)
        return self.deserialize(key, stored)

    def __setitem__(self, key: str, value: Any) -> None:
        self._cache.set(key, self.serialize(value), self._expiry(value))

    def __delitem__(self, key: str) -> None:
        if not self._cache.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, bytes)) and self._cache.has(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache.keys())

    def __len__(self) -> int:
        return self._cache.len()

    def bulk_delete(self, keys: Iterable[str]) -> None:
        """Deletes several keys in batches; missing keys are no error."""
        self._cache.delete_many(list(keys))

    def clear(self) -> None:
        """Deletes every entry of this namespace (and nothing else in the table)."""
        self._cache.clear()

    def items(self) -> Iterator[Any]:  # type: ignore[override]
        """The live ``(key, value)`` pairs, read 100 keys a BatchGetItem."""
        keys = self._cache.keys()
        for start in range(0, len(keys), 100):
            batch = keys[start : start + 100]
            for key, stored in zip(batch, self._cache.get_many(batch)):
                if stored is not None:
                    yield key, self.deserialize(key, stored)

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        return (value for _, value in self.items())

    def close(self) -> None:
        self._cache.close()

    def __repr__(self) -> str:
        return f"DynamoDbDict(table_name={self.table_name!r}, namespace={self.namespace!r})"


class DynamoDbCache(BaseCache):
    """requests-cache's ``DynamoDbCache`` (responses and redirects), on dynacache's Rust core."""

    def __init__(
        self,
        table_name: str = "http_cache",
        connection: Any = None,
        create_table: bool = True,
        *,
        namespace: str = "http_cache",
        ttl: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(cache_name=table_name)
        self.responses: DynamoDbDict = DynamoDbDict(
            table_name, namespace, connection=connection, create_table=create_table, ttl=ttl, **kwargs
        )
        redirect_kwargs = {k: v for k, v in kwargs.items() if k not in _STORAGE_OPTIONS}
        # Redirect aliases are small strings: stored without a serializer, in a namespace of
        # their own, so they survive restarts and are shared by the fleet.
        self.redirects: DynamoDbDict = DynamoDbDict(
            table_name,
            f"{namespace}.redirects",
            connection=connection,
            create_table=False,
            ttl=False,
            serializer=None,
            **redirect_kwargs,
        )

    def close(self) -> None:
        self.responses.close()
        self.redirects.close()


class _Missing:
    pass


_MISSING: Any = _Missing()


def _namespace(name: str) -> str:
    """requests-cache namespaces as dynacache ones (letters, digits and ``_ - . /``)."""
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name) or "http_cache"
