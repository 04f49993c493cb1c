"""``HttpCache``: the Rust HTTP cache engine (RFC 9111), shared with Rust clients and
``dynacache serve``, with the CLI's inspection commands as methods.

The HTTP front-ends (:mod:`dynacache.requests`, :mod:`dynacache.httpx`) send their requests
through one; it can also be opened on its own to list, show and purge what is stored.

>>> import dynacache
>>> cache = dynacache.HttpCache(in_memory=True)
>>> cache.ls()
[]
>>> len(cache)
0
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional

from . import _native

__all__ = ["HttpCache", "utc"]


def utc(seconds: Optional[float]) -> Optional[datetime]:
    """Seconds since the epoch as an aware UTC ``datetime`` (``None`` stays ``None``)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


class HttpCache(_native.HttpCache):
    """An HTTP response cache on a DynamoDB table: the engine of the Rust ``dynacache`` crate.

    ``HttpCache(table="dynacache", namespace="http", **options)``. The engine options are those
    of :class:`dynacache.Cache` (``endpoint_url``, ``region``, ``profile``, ``aws``,
    ``credentials``, ``embedded_file``, ``in_memory``, ``create_table``, timeouts); the cache
    settings are the Rust builder's: ``shared``, ``expire_after``, ``urls_expire_after``,
    ``allowed_codes``, ``allowed_methods``, ``match_headers``, ``ignored_parameters``,
    ``cache_control``, ``always_revalidate``, ``stale_if_error``, ``stale_while_revalidate``,
    ``heuristic_freshness``, ``set_cookie``, ``tag_fields``, ``targeted_cache_control``,
    ``secret_keys``, ``in_process_bytes``/``in_process_ttl`` (the in-process tier),
    ``fleet_lease`` (fleet single flight), ``max_body_size``, ``lookup_timeout``,
    ``write_wait``, ``read_only``.

    With no arguments it opens the ``dynacache`` CLI's table and namespace, so
    ``dynacache ls`` lists what Python stored. For a response stored by one language to be a
    hit for another, both must use the same table, namespace and mode (``shared``), and the
    same key settings: ``match_headers``, ``ignored_parameters`` and the request's method,
    URL and body (see the README's "Sharing HTTP entries across languages").
    """

    def ls(
        self,
        url: Optional[str] = None,
        *,
        prefix: Optional[str] = None,
        status: Optional[int] = None,
        expired: Optional[bool] = None,
    ) -> List[Dict[str, Any]]:
        """The stored responses' metadata (``dynacache ls``), filtered by a URL glob, a URL
        prefix, a status and whether they are expired. Times are aware UTC datetimes."""
        out = []
        for entry in self.entries():
            if url is not None and not fnmatch.fnmatchcase(entry["url"], url):
                continue
            if prefix is not None and not entry["url"].startswith(prefix):
                continue
            if status is not None and entry["status"] != status:
                continue
            if expired is not None and entry["is_expired"] != expired:
                continue
            entry["created_at"] = utc(entry["created_at"])
            entry["expires"] = utc(entry["expires"])
            out.append(entry)
        return out

    def purge(
        self,
        url: Optional[str] = None,
        *,
        prefix: Optional[str] = None,
        tag: Optional[str] = None,
        urls: Optional[Iterable[str]] = None,
        expired: bool = False,
        older_than: Any = None,
    ) -> int:
        """Deletes stored responses (``dynacache purge`` / ``rm``) and returns how many: those
        whose URL matches a glob (``url``) or starts with ``prefix``, those tagged ``tag``
        (by any process on the table), GETs of exact ``urls`` (every ``Vary`` variant), the
        expired ones, or those received longer ago than ``older_than`` (seconds or a
        ``timedelta``). With several criteria, each one's matches are deleted."""
        if url is None and prefix is None and tag is None and urls is None and not expired and older_than is None:
            raise TypeError("purge() needs a criterion: url, prefix, tag, urls, expired or older_than (clear() deletes all)")
        deleted = 0
        if url is not None or prefix is not None:
            keys = [
                e["key"]
                for e in self.entries()
                if (url is not None and fnmatch.fnmatchcase(e["url"], url))
                or (prefix is not None and e["url"].startswith(prefix))
            ]
            if keys:
                deleted += self.delete_keys(keys)
        if urls is not None:
            if isinstance(urls, str):
                raise TypeError("urls is an iterable of URLs, not one string")
            deleted += self.delete_urls(list(urls))
        if tag is not None:
            deleted += self.purge_tag(tag)
        if expired:
            deleted += self.delete_expired()
        if older_than is not None:
            deleted += self.delete_older_than(older_than)
        return deleted
