"""Python and the ``dynacache`` CLI (the Rust core) share tables, namespaces, keys and values.

Python writes and ``dynacache kv get`` reads, and the reverse, on both engines. The CLI runs
with HOME pointed at the test's directory, so nothing touches the real home.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

import dynacache

from conftest import DUMMY_AWS, STEERING_ENV


@pytest.fixture
def cli_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in STEERING_ENV}
    env.update(DUMMY_AWS)
    env["HOME"] = str(tmp_path)
    return env


@pytest.fixture
def dc(cli_path, engine, cli_env):
    """``dc("kv", "get", "k")``: runs the CLI on the engine's table and the test's namespace."""

    def run(*args, namespace=True, where=True, env=None):
        argv = [str(cli_path)]
        if where:
            argv += [*engine.cli_args, "--table", engine.table]
        if namespace:
            argv += ["--kv-namespace", engine.namespace]
        try:
            return subprocess.run(
                [*argv, *args], capture_output=True, text=True, timeout=120,
                env={**cli_env, **(env or {})},
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"the CLI did not finish within 120 s: {argv + list(args)}: {e}")

    return run


def cli_value(dc, key, **kwargs):
    r = dc("kv", "get", key, **kwargs)
    assert r.returncode == 0, f"kv get {key!r}: exit {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def cli_set(dc, key, value, *extra, **kwargs):
    r = dc("kv", "set", *extra, "--", key, value, **kwargs)
    assert r.returncode == 0, f"kv set {key!r}: exit {r.returncode}: {r.stderr}"


JSON_VALUES = {
    "dict": {"name": "Alice", "langs": ["Rust", "Python"], "age": 36, "ok": True, "none": None},
    "nested": {"a": {"b": {"c": [1, [2, [3, {"d": -4.25}]]]}}},
    "list": [1, "two", 3.5, None, False, {"x": []}],
    "empty_dict": {},
    "empty_list": [],
    "str": "héllo ✓ 日本 \"quoted\" \\ \n newline",
    "empty_str": "",
    "int": 42,
    "negative_int": -(2**63),
    "big_int": 2**64 - 1,
    "float": 1.5,
    "float_integral": 3.0,
    "tiny_float": 1e-300,
    "true": True,
    "false": False,
    "none": None,
}


@pytest.mark.parametrize("value", list(JSON_VALUES.values()), ids=list(JSON_VALUES))
def test_python_values_print_as_equal_json(make_cache, dc, value):
    make_cache().set("k", value)
    got = cli_value(dc, "k")
    assert got == value
    assert type(got) is type(value)


def test_tuples_print_as_arrays(make_cache, dc):
    make_cache().set("t", ("a", (1, 2)))
    assert cli_value(dc, "t") == ["a", [1, 2]]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"rps": 10, "burst": [1, 2.5], "on": true, "off": null}',
         {"rps": 10, "burst": [1, 2.5], "on": True, "off": None}),
        ("[1, \"x\", {\"y\": {}}]", [1, "x", {"y": {}}]),
        ('"hello"', "hello"),
        ("plain text, not JSON", "plain text, not JSON"),
        ("17", 17),
        ("-2.5", -2.5),
        ("true", True),
        ("null", None),
    ],
    ids=["object", "array", "json_str", "plain_str", "int", "float", "bool", "null"],
)
def test_cli_values_read_as_equal_python(make_cache, dc, text, expected):
    cli_set(dc, "k", text)
    c = make_cache()
    got = c.get("k", "missing")
    assert got == expected
    assert type(got) is type(expected)
    assert c.has("k")


def test_cli_ttl_is_seen_by_python(make_cache, dc):
    cli_set(dc, "k", '"x"', "--ttl", "10m")
    cli_set(dc, "forever", '"y"')
    c = make_cache()
    assert 590 < c.ttl("k") <= 600
    assert c.ttl("forever") == math.inf


def test_counters_across_languages(make_cache, dc):
    c = make_cache()
    for _ in range(5):
        c.inc("hits")
    assert cli_value(dc, "hits") == 5
    cli_set(dc, "hits", "41")
    assert c.inc("hits") == 42
    assert cli_value(dc, "hits") == 42
    cli_set(dc, "fresh", "100")
    assert c.dec("fresh", 1) == 99


def test_a_pickled_value_is_refused_by_the_cli_with_a_message_saying_so(make_cache, dc):
    make_cache(pickle=True).set("p", dt.datetime(2024, 1, 1))
    r = dc("kv", "get", "p")
    assert r.returncode != 0
    assert r.returncode != 3  # it is there: not "missing"
    assert r.stdout == ""
    assert "pickle=True" in r.stderr, r.stderr


def test_missing_and_expired_keys_exit_3(make_cache, dc):
    c = make_cache()
    c.set("gone", 1, ttl=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
    for key in ("never-set", "gone"):
        r = dc("kv", "get", key)
        assert r.returncode == 3, (key, r.stderr)
        assert r.stdout == ""


def test_ls_lists_the_keys_python_lists(make_cache, dc, engine):
    c = make_cache()
    c.set_many({"a": 1, "b:2": [2], "user:é": "x", "z" * 3000: "long, hashed"})
    c.inc("counter")
    c.set("gone", 1, ttl=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
    make_cache(namespace=engine.namespace + "-other").set("other", 1)
    r = dc("kv", "ls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == sorted(c.keys())
    assert sorted(c.keys()) == sorted(["a", "b:2", "user:é", "z" * 3000, "counter"])
    assert cli_value(dc, "z" * 3000) == "long, hashed"


def test_ls_sees_cli_written_keys(make_cache, dc):
    for key in ("one", "two", "three"):
        cli_set(dc, key, "1")
    assert sorted(make_cache().keys()) == ["one", "three", "two"]


def test_del_from_the_cli(make_cache, dc):
    c = make_cache()
    c.set_many({"a": 1, "b": 2})
    r = dc("kv", "del", "a", "missing")
    assert r.returncode == 0, r.stderr
    assert c.get("a") is None and c.get("b") == 2
    r = dc("kv", "del", "missing")
    assert r.returncode == 3


def test_python_deletes_what_the_cli_wrote(make_cache, dc):
    cli_set(dc, "k", '{"a": 1}')
    assert make_cache().delete("k")
    assert dc("kv", "get", "k").returncode == 3


def test_large_values_across_languages(make_cache, dc):
    # ~2 MB of base64 text: split into chunk items (it stays over the item limit compressed).
    text = base64.b64encode(os.urandom(1_500_000)).decode()
    c = make_cache()
    c.set("big", text)
    assert cli_value(dc, "big") == text
    doc = {"rows": [{"id": i, "name": f"row {i}"} for i in range(20_000)]}
    c.set("doc", doc)  # compressible: stored compressed
    assert cli_value(dc, "doc") == doc


def test_the_default_namespace_is_shared(engine, dc):
    c = engine.open(namespace=None)
    assert c.namespace == "kv"
    c.set("defaults", {"ns": "kv"})
    assert cli_value(dc, "defaults", namespace=False) == {"ns": "kv"}
    cli_set(dc, "from_cli", "[1]", namespace=False)
    assert c.get("from_cli") == [1]
    c.clear()


@pytest.mark.parametrize("close_python_first", [False, True], ids=["python_open", "python_closed"])
def test_two_processes_on_one_embedded_file(tmp_path, cli_path, cli_env, close_python_first):
    file = tmp_path / "shared.db"

    def cli(*args):
        r = subprocess.run([str(cli_path), "--embedded-file", str(file), *args],
                           capture_output=True, text=True, timeout=120, env=cli_env)
        return r

    c = dynacache.Cache(embedded_file=str(file))
    try:
        c.set("py", {"from": "python"})
        c.inc("n")
        if close_python_first:
            c.close()
        r = cli("kv", "get", "py")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"from": "python"}
        assert cli("kv", "set", "rs", '{"from": "cli"}').returncode == 0
        assert cli("kv", "set", "n", "10").returncode == 0
        if close_python_first:
            c = dynacache.Cache(embedded_file=str(file))
        assert c.get("rs") == {"from": "cli"}
        assert c.inc("n") == 11
        assert cli("kv", "get", "n").stdout.strip() == "11"
        c.set("py", "changed while the CLI used the file")
        assert json.loads(cli("kv", "get", "py").stdout) == "changed while the CLI used the file"
    finally:
        c.close()


def test_the_default_embedded_file_is_the_clis(tmp_path, monkeypatch, cli_path, cli_env):
    for name in STEERING_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "share" / "dynacache" / "cache.db"
    assert Path(dynacache.default_embedded_file()) == expected
    with dynacache.Cache() as c:  # table "dynacache", namespace "kv", the CLI's file
        assert c.table_name == dynacache.DEFAULT_TABLE == "dynacache"
        assert c.namespace == "kv"
        c.set("where", "the default file")
    assert expected.exists()
    r = subprocess.run([str(cli_path), "kv", "get", "where"], capture_output=True, text=True,
                       timeout=120, env=cli_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "the default file"


def test_dynacache_embedded_file_env_is_shared(tmp_path, monkeypatch, cli_path, cli_env):
    for name in STEERING_ENV:
        monkeypatch.delenv(name, raising=False)
    file = tmp_path / "from-env.db"
    monkeypatch.setenv("DYNACACHE_EMBEDDED_FILE", str(file))
    monkeypatch.setenv("DYNACACHE_KV_NAMESPACE", "envns")
    with dynacache.Cache() as c:
        assert c.namespace == "envns"
        c.set("k", [1, 2])
    env = {**cli_env, "DYNACACHE_EMBEDDED_FILE": str(file), "DYNACACHE_KV_NAMESPACE": "envns"}
    r = subprocess.run([str(cli_path), "kv", "get", "k"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [1, 2]
