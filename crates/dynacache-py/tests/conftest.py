"""Fixtures of the native API's tests: the engine under test, caches opened on it, the CLI.

Engines:

- ``embedded``: the embedded engine in a fresh SQLite file per test (``tmp_path/"cache.db"``);
- ``dynamodb_local``: DynamoDB Local at ``$DYNACACHE_TEST_DYNAMODB_LOCAL`` (skipped when unset),
  one table per test module (``py_<uuid>``) and one namespace per test, so tests never see each
  other's entries.

Start DynamoDB Local with ``scripts/dynamodb-local start 8765`` and export
``DYNACACHE_TEST_DYNAMODB_LOCAL=http://127.0.0.1:8765``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import dynacache

#: tests -> dynacache-py -> crates -> the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]

LOCAL = os.environ.get("DYNACACHE_TEST_DYNAMODB_LOCAL") or None

#: Variables that would silently move a cache (or the CLI) to another table, namespace or engine.
STEERING_ENV = (
    "DYNACACHE_TABLE",
    "DYNACACHE_KV_NAMESPACE",
    "DYNACACHE_NAMESPACE",
    "DYNACACHE_EMBEDDED_FILE",
    "DYNACACHE_AWS",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "XDG_DATA_HOME",
)

#: Dummy credentials: DynamoDB Local accepts any, but the SDK wants some.
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": "us-east-1",
}


@dataclass
class Engine:
    """Where the caches of one test live."""

    name: str
    table: str
    namespace: str
    #: The connection options of ``dynacache.Cache`` for this engine.
    where: Dict[str, Any]
    #: The same place as options of the ``dynacache`` CLI.
    cli_args: List[str]
    #: The embedded engine's file (``None`` for DynamoDB Local).
    file: Optional[Path] = None
    opened: List[Any] = field(default_factory=list)

    def options(self, **kwargs: Any) -> Dict[str, Any]:
        """Keyword arguments of ``Cache``/``AsyncCache.open`` on this engine, table and
        namespace, ``kwargs`` taking precedence."""
        return {"table": self.table, "namespace": self.namespace, **self.where, **kwargs}

    def open(self, **kwargs: Any) -> dynacache.Cache:
        cache = dynacache.Cache(**self.options(**kwargs))
        self.opened.append(cache)
        return cache


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def _module_table():
    """One DynamoDB Local table per test module, deleted after the module's tests."""
    name = _unique("py_")
    yield name
    if LOCAL:
        try:
            dynacache.Cache(
                name, endpoint_url=LOCAL, create_table=False, credentials=("local", "local", None)
            ).delete_table()
        except dynacache.TableNotFoundError:
            pass  # no test of the module opened it


@pytest.fixture(params=["embedded", "dynamodb_local"])
def engine(request, tmp_path, monkeypatch, _module_table) -> Engine:
    """The engine under test, a table and a namespace of this test's own."""
    for name in STEERING_ENV:
        monkeypatch.delenv(name, raising=False)
    # Nothing may touch the real home directory (the default embedded file lives there).
    monkeypatch.setenv("HOME", str(tmp_path))
    namespace = _unique("t")
    if request.param == "embedded":
        file = tmp_path / "cache.db"
        eng = Engine(
            name="embedded",
            table="dynacache",
            namespace=namespace,
            where={"embedded_file": str(file)},
            cli_args=["--embedded-file", str(file)],
            file=file,
        )
    else:
        if not LOCAL:
            pytest.skip("DYNACACHE_TEST_DYNAMODB_LOCAL is not set")
        for name, value in DUMMY_AWS.items():
            if not os.environ.get(name):
                monkeypatch.setenv(name, value)
        eng = Engine(
            name="dynamodb_local",
            table=_module_table,
            namespace=namespace,
            where={"endpoint_url": LOCAL},
            cli_args=["--endpoint-url", LOCAL],
        )
    yield eng
    for cache in eng.opened:
        try:
            cache.close()
        except Exception:  # pragma: no cover - closing is best effort
            pass


@pytest.fixture
def make_cache(engine):
    """``make_cache(**kwargs)``: a ``Cache`` on the engine's table and this test's namespace
    (``namespace=`` or any other option may be given); closed after the test."""
    return engine.open


@pytest.fixture
def cache(make_cache) -> dynacache.Cache:
    """A cache with default options on the engine under test."""
    return make_cache()


@pytest.fixture(scope="session")
def cli_path() -> Path:
    """The ``dynacache`` CLI binary: ``$DYNACACHE_CLI``, else the repository's debug build."""
    path = Path(os.environ.get("DYNACACHE_CLI") or REPO_ROOT / "target" / "debug" / "dynacache")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.skip(f"the dynacache CLI is not built ({path}): cargo build -p dynacache-cli")
    return path
