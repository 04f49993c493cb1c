"""How the drop-in backends turn their peers' connection arguments into a :class:`Cache`.

The peers hand their ``**kwargs`` to ``boto3.resource("dynamodb", **kwargs)`` (or take a boto3
``connection``); the same arguments pick the engine here, without importing boto3:

- ``endpoint_url`` → that endpoint (DynamoDB Local, or any compatible engine);
- ``region_name``, ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``,
  ``profile_name`` → AWS DynamoDB with those settings (else the standard AWS chain);
- a boto3 ``Session``, ``resource("dynamodb")`` or ``client("dynamodb")`` as ``connection``
  → its endpoint, region and credentials;
- nothing at all → the same default as :class:`dynacache.Cache`: the embedded engine in the
  ``dynacache`` CLI's file (``aws=True`` or ``DYNACACHE_AWS=1`` for AWS with the standard chain).

botocore settings that have no meaning for the Rust client (``config``, ``use_ssl``,
``verify``, ``api_version``, ``botocore_session``) are accepted and ignored, except that a
botocore ``Config``'s ``connect_timeout`` and ``read_timeout`` bound our calls too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlparse
import logging

log = logging.getLogger("dynacache")

# Keywords of boto3.resource()/client() that are accepted and have no effect here.
_IGNORED = {"config", "use_ssl", "verify", "api_version", "botocore_session", "service_name"}

# Options of dynacache.Cache a drop-in passes through as they are.
CACHE_OPTIONS = {
    "aws",
    "embedded_file",
    "in_memory",
    "create_table",
    "compress_from",
    "max_value_size",
    "secret_keys",
    "in_process_bytes",
    "in_process_ttl",
    "fleet_lease",
    "consistent_reads",
    "connect_timeout",
    "operation_timeout",
    "object_store",
    "object_store_endpoint_url",
    "object_threshold",
    "namespace",
}


def _is_aws(url: Optional[str]) -> bool:
    host = urlparse(url).hostname or "" if url else ""
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _frozen(credentials: Any) -> Optional[Tuple[str, str, Optional[str]]]:
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials() if hasattr(credentials, "get_frozen_credentials") else credentials
    return (frozen.access_key, frozen.secret_key, getattr(frozen, "token", None))


def from_connection(connection: Any) -> Dict[str, Any]:
    """The engine settings of a boto3 session, resource or client."""
    if connection is None:
        return {}
    client = None
    if hasattr(connection, "meta") and hasattr(connection.meta, "client"):
        client = connection.meta.client  # a resource
    elif hasattr(connection, "meta") and hasattr(connection.meta, "endpoint_url"):
        client = connection  # a client
    out: Dict[str, Any] = {}
    if client is not None:
        endpoint = client.meta.endpoint_url
        if endpoint and not _is_aws(endpoint):
            out["endpoint_url"] = endpoint
        else:
            out["aws"] = True
        if client.meta.region_name:
            out["region"] = client.meta.region_name
        signer = getattr(client, "_request_signer", None)
        creds = _frozen(getattr(signer, "_credentials", None))
        if creds:
            out["credentials"] = creds
        return out
    if hasattr(connection, "get_credentials"):  # a boto3 or botocore session
        out["aws"] = True
        region = getattr(connection, "region_name", None)
        if region:
            out["region"] = region
        creds = _frozen(connection.get_credentials())
        if creds:
            out["credentials"] = creds
        return out
    raise TypeError(
        f"connection must be a boto3 Session, a DynamoDB resource or client, not {type(connection).__name__}"
    )


def cache_options(connection: Any = None, *, strict: bool = True, **kwargs: Any) -> Dict[str, Any]:
    """:class:`dynacache.Cache` keywords from a peer's ``connection`` and ``**kwargs``.

    Unknown keywords raise ``TypeError`` when ``strict`` (as boto3 does for cachelib), and are
    dropped with a warning otherwise (as requests-cache and aiohttp-client-cache drop them)."""
    out = from_connection(connection)
    endpoint = kwargs.pop("endpoint_url", None)
    if endpoint:
        if _is_aws(endpoint):
            out["aws"] = True
        else:
            out["endpoint_url"] = endpoint
            out.pop("aws", None)
    region = kwargs.pop("region_name", None) or kwargs.pop("region", None)
    if region:
        out["region"] = region
    profile = kwargs.pop("profile_name", None) or kwargs.pop("profile", None)
    if profile:
        out["profile"] = profile
    key_id = kwargs.pop("aws_access_key_id", None)
    secret = kwargs.pop("aws_secret_access_key", None)
    token = kwargs.pop("aws_session_token", None)
    if key_id and secret:
        out["credentials"] = (key_id, secret, token)
    config = kwargs.get("config")
    if config is not None:
        connect = getattr(config, "connect_timeout", None)
        read = getattr(config, "read_timeout", None)
        if isinstance(connect, (int, float)):
            out.setdefault("connect_timeout", connect)
        if isinstance(read, (int, float)):
            out.setdefault("operation_timeout", read)
    for name in list(kwargs):
        if name in CACHE_OPTIONS:
            out[name] = kwargs.pop(name)
        elif name in _IGNORED:
            kwargs.pop(name)
    if kwargs and strict:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(kwargs))}")
    if kwargs:
        log.warning("dynacache: ignoring unknown keyword arguments: %s", ", ".join(sorted(kwargs)))
    return out


def stale_expiry(expires: Optional[dt.datetime], grace: dt.timedelta) -> Any:
    """The ``ttl`` of an HTTP drop-in's stored response: ``grace`` after it expires or is
    written, whichever is later (a response saved already expired is still there to
    revalidate); ``math.inf`` for a response without an expiry. The peers' datetimes are naive
    UTC."""
    if expires is None:
        return float("inf")
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.timezone.utc)
    return max(expires, dt.datetime.now(dt.timezone.utc)) + grace
