"""Large values on an object store from Python: ``object_store=`` on both engine pairs (the
embedded engine with a directory beside its file; DynamoDB Local with the S3 server at
``$DYNACACHE_TEST_S3``), shared with the CLI."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

import dynacache

S3 = os.environ.get("DYNACACHE_TEST_S3") or None


@pytest.fixture
def objects(engine):
    """The object-store options of this engine."""
    if engine.name == "embedded":
        return {"object_store": "embedded"}
    if not S3:
        pytest.skip("DYNACACHE_TEST_S3 is not set")
    return {
        "object_store": f"s3://py-{uuid.uuid4().hex[:12]}/cache",
        "object_store_endpoint_url": S3,
    }


def _cli_objects(objects):
    args = ["--object-store", objects["object_store"]]
    if "object_store_endpoint_url" in objects:
        args += ["--object-store-endpoint-url", objects["object_store_endpoint_url"]]
    return args


def test_large_values_round_trip_through_the_object_store(engine, objects):
    cache = engine.open(**objects)
    value = os.urandom(2 << 20)
    cache.set("blob", value)
    assert cache.get("blob") == value
    other = engine.open(**objects)
    assert other.get("blob") == value
    if engine.file is not None:
        stored = engine.file.parent / "cache.db.objects" / engine.namespace
        assert len(list(stored.iterdir())) == 1
    # Replaced by a small value: read back, and the object is gone.
    cache.set("blob", b"small")
    assert other.get("blob") == b"small"
    if engine.file is not None:
        assert not stored.exists() or not list(stored.iterdir())
    assert cache.vacuum() == 0


def test_a_reader_without_the_object_store_gets_a_configuration_error(engine, objects):
    engine.open(**objects).set("blob", os.urandom(1 << 20))
    with pytest.raises(dynacache.ConfigurationError, match="object store"):
        engine.open().get("blob")


def test_the_cli_reads_what_python_stored_in_the_object_store(engine, objects, cli_path):
    cache = engine.open(**objects)
    text = os.urandom(400_000).hex()  # about 400 KB once compressed: an object
    cache.set("report", text)
    r = subprocess.run(
        [str(cli_path), *engine.cli_args, "--table", engine.table, "--kv-namespace", engine.namespace,
         *_cli_objects(objects), "kv", "get", "report"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f'"{text}"'


def test_bad_object_store_options_are_clear_errors(engine):
    with pytest.raises(ValueError, match="object store"):
        engine.open(object_store="ftp://nowhere/x")
    if engine.name != "embedded":
        with pytest.raises(ValueError, match="embedded"):
            engine.open(object_store="embedded")
