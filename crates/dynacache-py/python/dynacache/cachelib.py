"""A drop-in for cachelib's ``DynamoDbCache``, on the Rust core.

Change the import and nothing else::

    # from cachelib import DynamoDbCache
    from dynacache.cachelib import DynamoDbCache

    cache = DynamoDbCache(table_name="python-cache", default_timeout=300, key_prefix="app:")
    cache.set("user:1", {"name": "Alice"})
    cache.get("user:1")          # {'name': 'Alice'}; None on a miss
    cache.inc("hits")            # atomic in DynamoDB, across processes

What differs from cachelib's own backend, all in the user's favour: values of any size
(compressed, and split over several items beyond DynamoDB's 400 KB limit), atomic ``inc`` and
``dec``, ``add`` that is atomic, ``has``/``get_many``/``set_many``/``delete_many`` in batches,
and ``clear`` confined to this cache's namespace by the metadata index instead of a table scan.
Plain data (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``dict``) is
stored as MessagePack, which Rust programs and the ``dynacache`` CLI read too; other objects are
pickled, as cachelib does. A ``serializer`` set on the instance (such as cachelib's
``JSONSerializer``) is used instead, as in cachelib.

Arguments are cachelib's. ``key_field`` and ``expiration_time_field`` name the table's partition
key and TTL attributes (defaults ``cache_key`` and ``expiration_time``, as cachelib's); the
remaining keywords pick the engine as described in :mod:`dynacache._connect` (``endpoint_url``,
``region_name``, credentials, a boto3 ``connection``), or are options of
:class:`dynacache.Cache` (``namespace``, default ``cachelib``; ``in_process_bytes``,
``secret_keys``, ``fleet_lease``, ...). ``check_connection=True`` raises ``RuntimeError`` at
construction when the engine cannot be reached, as cachelib does; by default the connection is
retried on later calls, which answer as a miss (``None``/``False``) meanwhile.

Flask-Caching: ``CACHE_TYPE = "dynacache.cachelib.DynamoDbCache"``. As for its own cachelib
backends, Flask-Caching passes ``CACHE_DEFAULT_TIMEOUT`` and ``CACHE_OPTIONS`` (the keywords
above, ``key_prefix`` among them) to the constructor.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any, Dict, List, Optional, Union

try:
    from cachelib.base import BaseCache
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'dynacache.cachelib needs cachelib: pip install "dynacache[cachelib]"'
    ) from None

from . import _connect
from ._native import Cache
from .errors import Error, ThrottledError, TimeoutError, UnavailableError

__all__ = ["DynamoDbCache"]

log = logging.getLogger(__name__)

Timeout = Union[int, float, dt.timedelta, None]


class DynamoDbCache(BaseCache):
    """cachelib's ``DynamoDbCache``, with the same constructor, on dynacache's Rust core."""

    #: Set to a cachelib serializer (``dumps``/``loads``) to use it instead of dynacache's codec.
    serializer: Any = None

    def __init__(
        self,
        table_name: str = "python-cache",
        default_timeout: Union[int, dt.timedelta] = 300,
        key_field: str = "cache_key",
        expiration_time_field: str = "expiration_time",
        key_prefix: Optional[str] = None,
        ignore_delete_many_errors: bool = True,
        check_connection: bool = False,
        connection: Any = None,
        **kwargs: Any,
    ) -> None:
        try:
            super().__init__(default_timeout, ignore_delete_many_errors=ignore_delete_many_errors)
        except TypeError:  # cachelib before 0.16 has no ignore_delete_many_errors
            super().__init__(default_timeout)
            self.ignore_delete_many_errors = ignore_delete_many_errors
        self.key_prefix = key_prefix or ""
        self.check_connection = check_connection
        options = _connect.cache_options(connection, **kwargs)
        options.setdefault("namespace", "cachelib")
        self._options: Dict[str, Any] = dict(
            table=table_name,
            key_attribute=key_field,
            ttl_attribute=expiration_time_field,
            pickle=True,
            **options,
        )
        self._cache: Optional[Cache] = None
        try:
            self._cache = Cache(**self._options)
        except Error as err:
            if check_connection or not isinstance(err, (UnavailableError, TimeoutError, ThrottledError)):
                raise RuntimeError(f"could not connect to DynamoDB: {err}") from err
            log.warning("dynacache: could not open table %r yet: %s", table_name, err)

    # ----- the Rust cache, opened late when the engine was unreachable at construction ------

    def _c(self) -> Cache:
        if self._cache is None:
            self._cache = Cache(**self._options)
        return self._cache

    def _ttl(self, timeout: Timeout) -> float:
        seconds = self._normalize_timeout(timeout)
        return math.inf if seconds <= 0 else float(seconds)

    def _dump(self, value: Any) -> Any:
        return value if self.serializer is None else self.serializer.dumps(value)

    def _load(self, stored: Any) -> Any:
        if self.serializer is None or not isinstance(stored, bytes):
            return stored
        return self.serializer.loads(stored)

    # ----- cachelib's interface -----------------------------------------------------------

    def get(self, key: str) -> Any:
        try:
            return self._load(self._c().get(self.key_prefix + key))
        except Error as err:
            log.warning("dynacache: get %r failed: %s", key, err)
            return None

    def get_many(self, *keys: str) -> List[Any]:
        try:
            values = self._c().get_many([self.key_prefix + k for k in keys])
        except Error as err:
            log.warning("dynacache: get_many failed: %s", err)
            return [None] * len(keys)
        return [self._load(v) for v in values]

    def set(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        try:
            self._c().set(self.key_prefix + key, self._dump(value), self._ttl(timeout))
            return True
        except Error as err:
            log.warning("dynacache: set %r failed: %s", key, err)
            return False

    def add(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        try:
            return self._c().add(self.key_prefix + key, self._dump(value), self._ttl(timeout))
        except Error as err:
            log.warning("dynacache: add %r failed: %s", key, err)
            return False

    def set_many(self, mapping: Dict[str, Any], timeout: Timeout = None) -> List[Any]:
        try:
            pairs = [(self.key_prefix + k, self._dump(v)) for k, v in mapping.items()]
            self._c().set_many(pairs, self._ttl(timeout))
            return list(mapping.keys())
        except Error as err:
            log.warning("dynacache: set_many failed: %s", err)
            return []

    def delete(self, key: str) -> bool:
        try:
            self._c().delete(self.key_prefix + key)
            return True
        except Error as err:
            log.warning("dynacache: delete %r failed: %s", key, err)
            return False

    def delete_many(self, *keys: str) -> List[Any]:
        try:
            self._c().delete_many([self.key_prefix + k for k in keys])
            return list(keys)
        except Error as err:
            if not self.ignore_delete_many_errors:
                raise RuntimeError(f"Failed to delete keys: {list(keys)}") from err
            log.warning("dynacache: delete_many failed: %s", err)
            return []

    def has(self, key: str) -> bool:
        try:
            return self._c().has(self.key_prefix + key)
        except Error as err:
            log.warning("dynacache: has %r failed: %s", key, err)
            return False

    def clear(self) -> bool:
        """Deletes every entry of this cache's namespace (not the rest of the table)."""
        try:
            self._c().clear()
            return True
        except Error as err:
            log.warning("dynacache: clear failed: %s", err)
            return False

    def inc(self, key: str, delta: int = 1) -> Optional[int]:
        try:
            return self._c().inc(self.key_prefix + key, delta)
        except Error as err:
            log.warning("dynacache: inc %r failed: %s", key, err)
            return None

    def dec(self, key: str, delta: int = 1) -> Optional[int]:
        try:
            return self._c().dec(self.key_prefix + key, delta)
        except Error as err:
            log.warning("dynacache: dec %r failed: %s", key, err)
            return None

    @property
    def _table(self) -> "_Table":
        # cachelib's backend exposes its boto3 Table as ``_table``; code that deletes the table
        # through it (``cache._table.delete()``, as cachelib's own tests do) keeps working.
        return _Table(self)

    def close(self) -> None:
        """Closes the connection; later calls answer as a miss."""
        if self._cache is not None:
            self._cache.close()


class _Table:
    """The part of a boto3 ``Table`` that code written for cachelib's backend reaches for."""

    def __init__(self, owner: DynamoDbCache) -> None:
        self._owner = owner

    def delete(self) -> None:
        """Deletes the table, with every namespace in it."""
        self._owner._c().delete_table()
        self._owner._cache = None
