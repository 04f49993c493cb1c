"""The exceptions of :mod:`dynacache`: one hierarchy under :class:`Error`, by meaning.

Each carries the Rust core's message (with its causes). Where a built-in exception means the
same thing, the class derives from it too, so ``except ValueError`` or ``except TimeoutError``
keep working::

    try:
        cache.set("k", b"x" * (300 << 20))
    except dynacache.ValueTooLargeError as e:
        print("too large:", e)
"""

import builtins

__all__ = [
    "Error",
    "ConfigurationError",
    "TableNotFoundError",
    "SchemaMismatchError",
    "AccessDeniedError",
    "InvalidKeyError",
    "InvalidArgumentError",
    "ValueTooLargeError",
    "EncodeError",
    "DecodeError",
    "IntegrityError",
    "ContentionError",
    "ThrottledError",
    "TimeoutError",
    "UnavailableError",
    "ClosedError",
]


class Error(Exception):
    """Every error of the cache."""


class ConfigurationError(Error, ValueError):
    """A setting is invalid, or the engine cannot be used as configured."""


class TableNotFoundError(ConfigurationError):
    """The table does not exist (and the cache was told not to create it)."""


class SchemaMismatchError(ConfigurationError):
    """The table exists with another key schema than the cache expects."""


class AccessDeniedError(Error, PermissionError):
    """The credentials are missing, or do not allow the call."""


class InvalidKeyError(Error, ValueError):
    """A key is empty or too long."""


class InvalidArgumentError(Error, ValueError):
    """An argument is out of range."""


class ValueTooLargeError(Error, ValueError):
    """A value is larger than the cache's ``max_value_size``."""


class EncodeError(Error, TypeError):
    """A value cannot be stored (not plain data and not picklable)."""


class DecodeError(Error, ValueError):
    """A stored value cannot be read as asked (a pickle without ``pickle=True``, not a counter, ...)."""


class IntegrityError(Error):
    """A stored item is damaged or was tampered with: it is never returned as a value."""


class ContentionError(Error):
    """A key kept changing under concurrent writers."""


class ThrottledError(Error):
    """DynamoDB throttled the call, retries included."""


class TimeoutError(Error, builtins.TimeoutError):
    """A call took longer than the operation timeout."""


class UnavailableError(Error, ConnectionError):
    """The endpoint is unreachable, or the circuit breaker is open after repeated failures."""


class ClosedError(Error):
    """The cache was closed."""
