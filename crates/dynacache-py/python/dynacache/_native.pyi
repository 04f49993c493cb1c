"""Type stubs of dynacache's native core (the Rust ``dynacache::Cache``)."""

import datetime
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

Key = Union[str, bytes]
#: Seconds, a ``timedelta`` from now, a ``datetime`` (absolute), ``math.inf`` (never), or
#: ``None`` (the cache's default).
Ttl = Union[int, float, datetime.timedelta, datetime.datetime, None]
Seconds = Union[int, float, datetime.timedelta]
T = TypeVar("T")

PYTHON_PICKLE_EXT: int
DEFAULT_TABLE: str
MAX_KEY_LEN: int

def default_embedded_file() -> os.PathLike[str]:
    """The embedded engine's file the ``dynacache`` CLI uses by default."""

class Lease:
    """A lease: a name held by one process at a time, with a growing fencing token."""

    @property
    def name(self) -> Optional[Key]: ...
    @property
    def token(self) -> Optional[int]: ...
    @property
    def expires(self) -> Optional[float]: ...
    @property
    def held(self) -> bool: ...

class Cache:
    """A key/value cache on a DynamoDB table, shared with Rust and the ``dynacache`` CLI.

    With no arguments: table ``dynacache``, namespace ``kv``, the embedded engine in the CLI's
    file (``DYNACACHE_TABLE``, ``DYNACACHE_KV_NAMESPACE``, ``DYNACACHE_EMBEDDED_FILE`` change
    them). ``endpoint_url`` (or ``AWS_ENDPOINT_URL_DYNAMODB``) picks a DynamoDB-compatible
    endpoint; ``aws=True`` (or ``DYNACACHE_AWS=1``, or a ``region``, ``profile`` or
    ``credentials``) AWS DynamoDB with the standard credential chain.

    ``object_store`` (or ``DYNACACHE_OBJECT_STORE``) keeps values too large for one item (or
    from ``object_threshold`` bytes up) in an object store: ``"s3://bucket/prefix"`` (AWS, or
    the S3-compatible server at ``object_store_endpoint_url``), a directory, or ``"embedded"``
    (a directory beside the embedded engine's file). Every process sharing the table must name
    the same one.
    """

    def __init__(
        self,
        table: Optional[str] = None,
        namespace: Optional[str] = None,
        *,
        endpoint_url: Optional[str] = None,
        region: Optional[str] = None,
        profile: Optional[str] = None,
        aws: Optional[bool] = None,
        credentials: Optional[Tuple[str, str, Optional[str]]] = None,
        embedded_file: Union[str, os.PathLike[str], None] = None,
        in_memory: bool = False,
        create_table: bool = True,
        key_attribute: str = "key",
        ttl_attribute: str = "ttl",
        default_ttl: Ttl = None,
        compress_from: Optional[int] = 1024,
        max_value_size: Optional[int] = None,
        secret_keys: Optional[Iterable[bytes]] = None,
        in_process_bytes: Optional[int] = None,
        in_process_ttl: Optional[Seconds] = None,
        fleet_lease: Optional[Seconds] = None,
        pickle: bool = False,
        consistent_reads: bool = False,
        connect_timeout: Optional[Seconds] = None,
        operation_timeout: Optional[Seconds] = None,
        object_store: Optional[str] = None,
        object_store_endpoint_url: Optional[str] = None,
        object_threshold: Optional[int] = None,
    ) -> None: ...
    @property
    def table_name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def engine(self) -> str: ...
    @property
    def pickle(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def get(self, key: Key, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when it is missing or expired."""
    def set(self, key: Key, value: Any, ttl: Ttl = None) -> None:
        """Stores ``value`` under ``key``."""
    def add(self, key: Key, value: Any, ttl: Ttl = None) -> bool:
        """Stores ``value`` only if ``key`` is missing or expired (atomic); whether it did."""
    def delete(self, key: Key) -> bool:
        """Deletes ``key``; whether a live value was there."""
    def has(self, key: Key) -> bool:
        """Whether a live value is under ``key``."""
    def __contains__(self, key: Key) -> bool: ...
    def get_many(self, keys: Iterable[Key]) -> List[Any]:
        """The values under ``keys`` in order, ``None`` for missing ones (BatchGetItem)."""
    def set_many(self, mapping: Union[Mapping[Key, Any], Iterable[Tuple[Key, Any]]], ttl: Ttl = None) -> None:
        """Stores several values (BatchWriteItem)."""
    def delete_many(self, keys: Iterable[Key]) -> None:
        """Deletes several keys (BatchWriteItem)."""
    def inc(self, key: Key, delta: int = 1, ttl: Ttl = None) -> int:
        """Adds ``delta`` atomically (a missing key counts as 0); the new value."""
    def dec(self, key: Key, delta: int = 1, ttl: Ttl = None) -> int:
        """Subtracts ``delta`` atomically; the new value."""
    def clear(self) -> int:
        """Deletes every entry of the namespace (and nothing else); how many."""
    def vacuum(self) -> int:
        """Deletes chunk items and objects no entry names (older than 15 minutes); how many."""
    def keys(self) -> List[Key]:
        """The live keys of the namespace."""
    def len(self) -> int:
        """How many live entries the namespace holds."""
    def __len__(self) -> int: ...
    def ttl(self, key: Key) -> Optional[float]:
        """Seconds left, ``math.inf`` when it never expires, ``None`` when missing."""
    def touch(self, key: Key, ttl: Seconds) -> bool:
        """Gives a live value a new expiry; whether there was one."""
    def get_or_set(self, key: Key, factory: Callable[[], T], ttl: Ttl = None) -> T:
        """The value under ``key``, else ``factory()`` stored and returned: computed once per key
        in the process, and once across the fleet with ``fleet_lease``."""
    def lease(self, name: Key, ttl: Seconds) -> Optional[Lease]:
        """Takes the lease ``name`` if no one holds it."""
    def renew(self, lease: Lease, ttl: Seconds) -> bool:
        """Extends a held lease; ``False`` when it was lost."""
    def release(self, lease: Lease) -> bool:
        """Gives a lease up; ``False`` when it had already been lost."""
    def delete_table(self) -> None:
        """Deletes the whole table (every namespace in it) and closes the cache."""
    def close(self) -> None:
        """Closes the cache; later calls raise ``ClosedError``."""
    def __enter__(self) -> "Cache": ...
    def __exit__(self, *args: Any) -> bool: ...

Headers = Iterable[Tuple[Union[str, bytes], Union[str, bytes]]]

class Reply:
    """The engine's answer to one request sent through :meth:`HttpCache.send`."""

    status: int
    headers: List[Tuple[str, str]]
    from_cache: bool
    revalidated: bool
    stale: bool
    stored: bool
    cache_status: str
    expires: Optional[float]
    created_at: Optional[float]
    cache_key: Optional[str]
    body: Optional[bytes]
    def read_chunk(self) -> bytes:
        """The next chunk of a streaming body, ``b""`` at its end."""

class HttpCache:
    """The Rust HTTP cache engine (RFC 9111) on a DynamoDB table; see ``dynacache.HttpCache``."""

    def __init__(self, table: Optional[str] = None, namespace: Optional[str] = None, **options: Any) -> None: ...
    @property
    def table_name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def engine(self) -> str: ...
    @property
    def shared(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def send(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        fetch: Callable[[str, str, List[Tuple[str, str]], bytes], Tuple[int, Headers, Union[bytes, Iterable[bytes], None]]],
        *,
        refresh: bool = False,
        force_refresh: bool = False,
        only_if_cached: bool = False,
        disable_cache: bool = False,
        expire_after: Any = None,
    ) -> Reply:
        """Sends one request through the cache, ``fetch`` sending what the origin must answer."""
    def invalidate(self, method: str, url: str, headers: Headers, status: int, response_headers: Headers) -> None:
        """Removes what an uncached unsafe request's response invalidates."""
    def flush(self) -> None:
        """Waits for the background storage writes."""
    def key_for_url(self, url: str) -> Optional[str]: ...
    def entries(self) -> List[Dict[str, Any]]: ...
    def show(self, url_or_key: str) -> Optional[Dict[str, Any]]: ...
    def keys(self) -> List[str]: ...
    def urls(self) -> List[str]: ...
    def __len__(self) -> int: ...
    def contains_url(self, url: str) -> bool: ...
    def contains_key(self, key: str) -> bool: ...
    def delete_keys(self, keys: List[str]) -> int: ...
    def delete_urls(self, urls: List[str]) -> int: ...
    def delete_expired(self) -> int: ...
    def delete_older_than(self, age: Seconds) -> int: ...
    def purge_tag(self, tag: str) -> int: ...
    def clear(self) -> int: ...
    def vacuum(self) -> int: ...
    def stats(self) -> Dict[str, int]: ...
    def storage_stats(self) -> Dict[str, Any]: ...
    def delete_table(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "HttpCache": ...
    def __exit__(self, *args: Any) -> bool: ...
