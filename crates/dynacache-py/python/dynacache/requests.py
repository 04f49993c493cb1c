"""HTTP caching for ``requests`` on the Rust engine: a transport adapter and a session.

Lookups, storage and every RFC 9111 decision are the Rust engine's; misses and revalidations
are sent by requests' own ``HTTPAdapter`` (or the adapter you give), so proxies, TLS settings,
auth, hooks and retries behave as usual. Entries are the engine's own: a response stored here
is a hit for a Rust ``dynacache`` client and for ``dynacache serve`` on the same table and
namespace in the same mode, and the reverse.

>>> import dynacache.requests
>>> session = dynacache.requests.CachedSession(in_memory=True, expire_after=300)
>>> # session.get("https://example.com/").from_cache -> False, then True

Responses are ordinary ``requests.Response`` objects with ``from_cache``, ``cache_status``
(the RFC 9211 value), ``expires`` and ``created_at`` (aware UTC datetimes or ``None``),
``revalidated``, ``stale`` and ``cache_key``. ``stream=True`` reads a large cached body chunk
by chunk. A cache failure never fails a request: the origin answers.
"""

from __future__ import annotations

import http.client
import io
from typing import Any, Iterator, List, Optional, Tuple

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

from . import errors
from ._httpcache import HttpCache, utc

__all__ = ["CacheAdapter", "CachedSession"]

#: Origin bodies up to this size (by ``Content-Length``) are read whole; larger ones, and
#: bodies of unknown length, stream through the engine chunk by chunk.
WHOLE_BODY_MAX = 1 << 20

_CHUNK = 64 * 1024


def _origin_body(response: requests.Response) -> Any:
    """An origin response's body as the engine takes it: bytes, or an iterator of the raw
    (still encoded) bytes that releases the connection at its end."""
    raw = response.raw
    length = raw.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) <= WHOLE_BODY_MAX:
        try:
            return raw.read(decode_content=False)
        finally:
            response.close()

    def chunks() -> Iterator[bytes]:
        try:
            yield from raw.stream(_CHUNK, decode_content=False)
        finally:
            response.close()

    return chunks()


class _ReplyReader(io.RawIOBase):
    """A streaming reply body as the file urllib3 reads from."""

    def __init__(self, reply: Any) -> None:
        self._reply = reply
        self._buffer = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer and not self._done:
            chunk = self._reply.read_chunk()
            if chunk:
                self._buffer = chunk
            else:
                self._done = True
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _mark(response: Any, reply: Any) -> None:
    response.from_cache = reply.from_cache
    response.cache_status = reply.cache_status
    response.expires = utc(reply.expires)
    response.created_at = utc(reply.created_at)
    response.revalidated = reply.revalidated
    response.stale = reply.stale
    response.cache_key = reply.cache_key


def _mark_uncached(response: Any) -> Any:
    response.from_cache = False
    response.cache_status = "dynacache; fwd=bypass"
    response.expires = None
    response.created_at = None
    response.revalidated = False
    response.stale = False
    response.cache_key = None
    return response


class CacheAdapter(BaseAdapter):
    """A requests transport adapter that caches in a :class:`dynacache.HttpCache`.

    ``CacheAdapter(cache=None, *, adapter=None, **settings)``: ``cache`` is an open
    :class:`~dynacache.HttpCache` (several adapters may share one); without it, one is opened
    with ``settings`` (the engine options and cache settings of :class:`~dynacache.HttpCache`).
    ``adapter`` sends misses and revalidations (default: a new ``requests.adapters.HTTPAdapter``).

    >>> import requests, dynacache.requests
    >>> session = requests.Session()
    >>> adapter = dynacache.requests.CacheAdapter(in_memory=True)
    >>> session.mount("https://", adapter)
    >>> session.mount("http://", adapter)
    """

    def __init__(self, cache: Optional[HttpCache] = None, *, adapter: Optional[BaseAdapter] = None, **settings: Any) -> None:
        super().__init__()
        if cache is not None and settings:
            raise TypeError("pass an open cache or settings to open one, not both")
        self.cache: HttpCache = cache if cache is not None else HttpCache(**settings)
        self.adapter: BaseAdapter = adapter if adapter is not None else HTTPAdapter()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        options = dict(timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, str):
            data = body.encode("utf-8")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        else:
            return self._uncached(request, stream, options)
        origins: List[requests.Response] = []

        def fetch(method: str, url: str, headers: List[Tuple[str, str]], sent: bytes) -> Any:
            prepared = request.copy()
            prepared.method = method
            prepared.url = url
            prepared.headers = CaseInsensitiveDict(headers)
            prepared.body = body if sent == data else (sent or None)
            response = self.adapter.send(prepared, stream=True, **options)
            origins.append(response)
            return response.status_code, list(response.raw.headers.items()), _origin_body(response)

        try:
            reply = self.cache.send(request.method or "GET", request.url or "", list(request.headers.items()), data, fetch)
        except errors.InvalidArgumentError:
            # Not a request the cache can key (an unusual URL or header): uncached.
            return self._uncached(request, stream, options)
        return self._response(request, reply, origins, stream)

    def _uncached(self, request: requests.PreparedRequest, stream: bool, options: Any) -> requests.Response:
        response = self.adapter.send(request, stream=stream, **options)
        try:
            self.cache.invalidate(
                request.method or "GET",
                request.url or "",
                list(request.headers.items()),
                response.status_code,
                list(response.headers.items()),
            )
        except errors.Error:
            pass
        return _mark_uncached(response)

    def _response(self, request: requests.PreparedRequest, reply: Any, origins: List[requests.Response], stream: bool) -> requests.Response:
        headers = HTTPHeaderDict()
        for name, value in reply.headers:
            headers.add(name, value)
        body = io.BytesIO(reply.body) if reply.body is not None else io.BufferedReader(_ReplyReader(reply), _CHUNK)
        raw = HTTPResponse(
            body=body,
            headers=headers,
            status=reply.status,
            reason=http.client.responses.get(reply.status, ""),
            preload_content=False,
            decode_content=True,
            request_method=request.method,
            request_url=request.url,
        )
        if origins and not reply.from_cache:
            # The origin's own response, so that the session's cookie jar sees its cookies.
            raw._original_response = getattr(origins[-1].raw, "_original_response", None)  # type: ignore[attr-defined]
        build = getattr(self.adapter, "build_response", None) or HTTPAdapter.build_response.__get__(self.adapter)
        response = build(request, raw)
        _mark(response, reply)
        if not stream:
            response.content  # noqa: B018 - read now, as requests does without stream=True
        return response

    def close(self) -> None:
        """Closes the origin adapter (the cache stays open: it may be shared)."""
        self.adapter.close()


class CachedSession(requests.Session):
    """A ``requests.Session`` with a :class:`CacheAdapter` mounted on ``http://`` and
    ``https://``.

    ``CachedSession(cache=None, **settings)``, as :class:`CacheAdapter`. The cache is
    ``session.cache``.

    >>> import dynacache.requests
    >>> with dynacache.requests.CachedSession(in_memory=True, shared=True) as session:
    ...     session.cache.shared
    True
    """

    def __init__(self, cache: Optional[HttpCache] = None, *, adapter: Optional[BaseAdapter] = None, **settings: Any) -> None:
        super().__init__()
        self.cache_adapter = CacheAdapter(cache, adapter=adapter, **settings)
        self.mount("https://", self.cache_adapter)
        self.mount("http://", self.cache_adapter)

    @property
    def cache(self) -> HttpCache:
        """The :class:`~dynacache.HttpCache` responses are stored in."""
        return self.cache_adapter.cache
