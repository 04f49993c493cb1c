"""HTTP caching for ``httpx`` on the Rust engine: a sync and an async transport.

Each wraps the transport that sends misses and revalidations (default ``httpx.HTTPTransport``
/ ``httpx.AsyncHTTPTransport``); lookups, storage and every RFC 9111 decision are the Rust
engine's, its entries shared with Rust clients and ``dynacache serve``. The async transport
never blocks the event loop: engine work runs with the GIL released on worker threads, and the
origin is awaited on the loop.

>>> import httpx, dynacache.httpx
>>> client = httpx.Client(transport=dynacache.httpx.CacheTransport(in_memory=True))

A response says what the cache did in its extensions: ``from_cache``, ``cache_status`` (the
RFC 9211 value), ``expires`` and ``created_at`` (aware UTC datetimes or ``None``),
``revalidated``, ``stale`` and ``cache_key``. Large bodies stream chunk by chunk. A cache
failure never fails a request: the origin answers.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, AsyncIterator, Iterator, List, Optional, Tuple

import httpx

from . import errors
from ._httpcache import HttpCache, utc
from .aio import _pool

__all__ = ["CacheTransport", "AsyncCacheTransport"]

#: Origin bodies up to this size (by ``Content-Length``) are read whole; larger ones, and
#: bodies of unknown length, stream through the engine chunk by chunk.
WHOLE_BODY_MAX = 1 << 20


def _small(response: httpx.Response) -> bool:
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= WHOLE_BODY_MAX


def _extensions(reply: Any) -> dict:
    return {
        "from_cache": reply.from_cache,
        "cache_status": reply.cache_status,
        "expires": utc(reply.expires),
        "created_at": utc(reply.created_at),
        "revalidated": reply.revalidated,
        "stale": reply.stale,
        "cache_key": reply.cache_key,
    }


_UNCACHED = {
    "from_cache": False,
    "cache_status": "dynacache; fwd=bypass",
    "expires": None,
    "created_at": None,
    "revalidated": False,
    "stale": False,
    "cache_key": None,
}


def _cache_for(cache: Optional[HttpCache], settings: Any) -> HttpCache:
    if cache is not None and settings:
        raise TypeError("pass an open cache or settings to open one, not both")
    return cache if cache is not None else HttpCache(**settings)


class _ReplyStream(httpx.SyncByteStream):
    def __init__(self, reply: Any) -> None:
        self._reply = reply

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self._reply.read_chunk()
            if not chunk:
                return
            yield chunk


class _AsyncReplyStream(httpx.AsyncByteStream):
    def __init__(self, reply: Any) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await loop.run_in_executor(_pool(), self._reply.read_chunk)
            if not chunk:
                return
            yield chunk


def _request_body(request: httpx.Request) -> Optional[bytes]:
    """The request's whole body, or ``None`` when it streams (it is then sent uncached)."""
    if isinstance(request.stream, httpx.ByteStream):
        return request.read()
    return None


class CacheTransport(httpx.BaseTransport):
    """An httpx transport that caches in a :class:`dynacache.HttpCache`.

    ``CacheTransport(transport=None, cache=None, **settings)``: ``transport`` sends misses and
    revalidations (default ``httpx.HTTPTransport()``); ``cache`` is an open
    :class:`~dynacache.HttpCache`, else one is opened with ``settings``.

    >>> import httpx, dynacache.httpx
    >>> transport = dynacache.httpx.CacheTransport(in_memory=True, expire_after=60)
    >>> with httpx.Client(transport=transport) as client:
    ...     transport.cache.namespace
    'http'
    """

    def __init__(self, transport: Optional[httpx.BaseTransport] = None, cache: Optional[HttpCache] = None, **settings: Any) -> None:
        self.transport: httpx.BaseTransport = transport if transport is not None else httpx.HTTPTransport()
        self.cache: HttpCache = _cache_for(cache, settings)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        data = _request_body(request)
        if data is None:
            return self._uncached(request)

        def fetch(method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> Any:
            sent = httpx.Request(method, url, headers=headers, content=body, extensions=request.extensions)
            response = self.transport.handle_request(sent)
            if _small(response):
                try:
                    return response.status_code, response.headers.raw, response.read()
                finally:
                    response.close()

            def chunks() -> Iterator[bytes]:
                try:
                    yield from response.stream  # type: ignore[misc]
                finally:
                    response.close()

            return response.status_code, response.headers.raw, chunks()

        try:
            reply = self.cache.send(request.method, str(request.url), request.headers.raw, data, fetch)
        except errors.InvalidArgumentError:
            return self._uncached(request)
        stream: httpx.SyncByteStream = httpx.ByteStream(reply.body) if reply.body is not None else _ReplyStream(reply)
        return httpx.Response(reply.status, headers=reply.headers, stream=stream, extensions=_extensions(reply))

    def _uncached(self, request: httpx.Request) -> httpx.Response:
        response = self.transport.handle_request(request)
        try:
            self.cache.invalidate(request.method, str(request.url), request.headers.raw, response.status_code, response.headers.raw)
        except errors.Error:
            pass
        response.extensions = {**response.extensions, **_UNCACHED}
        return response

    def close(self) -> None:
        self.transport.close()


class AsyncCacheTransport(httpx.AsyncBaseTransport):
    """The async :class:`CacheTransport`: ``AsyncCacheTransport(transport=None, cache=None,
    **settings)``, the origin sent by ``transport`` (default ``httpx.AsyncHTTPTransport()``)
    on the event loop, engine work on worker threads with the GIL released.

    >>> import asyncio, httpx, dynacache.httpx
    >>> async def main():
    ...     transport = dynacache.httpx.AsyncCacheTransport(in_memory=True)
    ...     async with httpx.AsyncClient(transport=transport) as client:
    ...         return transport.cache.shared
    >>> asyncio.run(main())
    False
    """

    def __init__(self, transport: Optional[httpx.AsyncBaseTransport] = None, cache: Optional[HttpCache] = None, **settings: Any) -> None:
        self.transport: httpx.AsyncBaseTransport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.cache: HttpCache = _cache_for(cache, settings)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if isinstance(request.stream, httpx.ByteStream):
            data: Optional[bytes] = await request.aread()
        else:
            data = None
        if data is None:
            return await self._uncached(request)
        loop = asyncio.get_running_loop()

        async def fetch_async(method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> Any:
            sent = httpx.Request(method, url, headers=headers, content=body, extensions=request.extensions)
            response = await self.transport.handle_async_request(sent)
            if _small(response):
                try:
                    return response.status_code, response.headers.raw, await response.aread()
                finally:
                    await response.aclose()
            return response.status_code, response.headers.raw, _pull(response)

        def _pull(response: httpx.Response) -> Iterator[bytes]:
            # Called from an engine worker thread: each chunk is awaited on the loop.
            chunks = response.stream.__aiter__()  # type: ignore[union-attr]
            try:
                while True:
                    try:
                        yield asyncio.run_coroutine_threadsafe(chunks.__anext__(), loop).result()
                    except StopAsyncIteration:
                        return
            finally:
                asyncio.run_coroutine_threadsafe(response.aclose(), loop).result()

        def fetch(method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> Any:
            return asyncio.run_coroutine_threadsafe(fetch_async(method, url, headers, body), loop).result()

        send = functools.partial(self.cache.send, request.method, str(request.url), request.headers.raw, data, fetch)
        try:
            reply = await loop.run_in_executor(_pool(), send)
        except errors.InvalidArgumentError:
            return await self._uncached(request)
        stream: httpx.AsyncByteStream = httpx.ByteStream(reply.body) if reply.body is not None else _AsyncReplyStream(reply)
        return httpx.Response(reply.status, headers=reply.headers, stream=stream, extensions=_extensions(reply))

    async def _uncached(self, request: httpx.Request) -> httpx.Response:
        response = await self.transport.handle_async_request(request)
        loop = asyncio.get_running_loop()
        invalidate = functools.partial(
            self.cache.invalidate, request.method, str(request.url), request.headers.raw, response.status_code, response.headers.raw
        )
        try:
            await loop.run_in_executor(_pool(), invalidate)
        except errors.Error:
            pass
        response.extensions = {**response.extensions, **_UNCACHED}
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
