"""A pytest plugin that runs a peer project's own DynamoDB backend tests, unchanged, against
dynacache's drop-in: it puts ``dynacache.cachelib.DynamoDbCache`` where the tests import
cachelib's, before they are collected.

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


def pytest_configure(config):
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
