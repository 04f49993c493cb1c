"""A pytest plugin that runs a peer project's own DynamoDB backend tests, unchanged, against
dynacache's drop-in: it puts dynacache's class (``dynacache.cachelib.DynamoDbCache``,
``dynacache.requests_cache.DynamoDbCache`` / ``DynamoDbDict``, ``dynacache.aiohttp.DynamoDBBackend``
/ ``DynamoDbCache``) where the tests import the peer's, before they are collected.

The peers' tests name their endpoint (cachelib's: ``http://localhost:8000``);
``DYNACACHE_PEER_ENDPOINT`` points them at another DynamoDB-compatible engine instead.
"""

import os


def _endpoint(kwargs):
    override = os.environ.get("DYNACACHE_PEER_ENDPOINT")
    # Only the engine the suite means to run on; other endpoints (unreachable ones) stay.
    if override and kwargs.get("endpoint_url") in ("http://localhost:8000", "http://127.0.0.1:8000"):
        kwargs["endpoint_url"] = override
    return kwargs


def _forward_port_8000():
    """The peers' own fixtures (not only their backends) talk to ``localhost:8000`` with boto3:
    when the engine listens elsewhere, forward that port to it."""
    import socket
    import threading
    from urllib.parse import urlparse

    override = os.environ.get("DYNACACHE_PEER_ENDPOINT")
    if not override:
        return
    target = urlparse(override)
    if target.port == 8000:
        return
    try:
        listener = socket.create_server(("127.0.0.1", 8000))
    except OSError:
        return  # something already answers there

    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection((target.hostname, target.port))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def _swap(module, name, ours):
    class Swapped(ours):
        __doc__ = ours.__doc__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **_endpoint(kwargs))

    Swapped.__name__ = Swapped.__qualname__ = name
    setattr(module, name, Swapped)
    return Swapped


def pytest_configure(config):
    _forward_port_8000()
    suite = os.environ.get("DYNACACHE_PEER_SUITE", "cachelib")
    if suite == "requests-cache":
        import requests_cache.backends
        import requests_cache.backends.dynamodb

        import dynacache.requests_cache

        for name in ("DynamoDbCache", "DynamoDbDict"):
            swapped = _swap(requests_cache.backends, name, getattr(dynacache.requests_cache, name))
            setattr(requests_cache.backends.dynamodb, name, swapped)
        return

    if suite == "aiohttp":
        import aiohttp_client_cache.backends.dynamodb as theirs

        import dynacache.aiohttp

        for name in ("DynamoDBBackend", "DynamoDbCache"):
            _swap(theirs, name, getattr(dynacache.aiohttp, name))
        return

    import cachelib

    import dynacache.cachelib

    class DynamoDbCache(dynacache.cachelib.DynamoDbCache):
        __doc__ = dynacache.cachelib.DynamoDbCache.__doc__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **_endpoint(kwargs))

    DynamoDbCache.__name__ = "DynamoDbCache"
    cachelib.DynamoDbCache = DynamoDbCache
    import cachelib.dynamodb

    cachelib.dynamodb.DynamoDbCache = DynamoDbCache
