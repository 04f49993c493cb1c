"""DynamoDB-backed caching on the Rust core of ``dynacache``.

One table is one cache for every process, language and Lambda environment that opens it: a
value set from Python is read by a Rust ``dynacache::Cache`` on the same table and namespace,
and the reverse.

>>> import dynacache
>>> cache = dynacache.Cache(in_memory=True)   # no argument at all: the CLI's embedded file
>>> cache.set("user:1", {"name": "Alice", "langs": ["Rust", "Python"]}, ttl=300)
>>> cache.get("user:1")
{'name': 'Alice', 'langs': ['Rust', 'Python']}
>>> cache.inc("visits")
1

Engines: the embedded engine (default, persisted in the ``dynacache`` CLI's file), any
DynamoDB-compatible endpoint (``endpoint_url=``, e.g. DynamoDB Local), or AWS DynamoDB
(``aws=True``, or a ``region``/``profile``/``credentials``), with the standard AWS chain.

Drop-in backends: :mod:`dynacache.cachelib`, :mod:`dynacache.requests_cache`,
:mod:`dynacache.aiohttp`. Asyncio: :class:`AsyncCache`. HTTP caching on the Rust engine:
:class:`HttpCache`, :mod:`dynacache.requests`, :mod:`dynacache.httpx`.
"""

import math

from ._native import DEFAULT_TABLE, MAX_KEY_LEN, PYTHON_PICKLE_EXT, Cache, Lease, default_embedded_file
from .aio import AsyncCache
from ._httpcache import HttpCache
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors

#: Pass as ``ttl`` for a value that never expires.
NEVER: float = math.inf

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "AsyncCache",
    "HttpCache",
    "Lease",
    "NEVER",
    "DEFAULT_TABLE",
    "MAX_KEY_LEN",
    "PYTHON_PICKLE_EXT",
    "default_embedded_file",
    *_errors,
]
