"""The native API (``dynacache.Cache``, ``dynacache.AsyncCache``) as a user relies on it, on
both engines (see conftest.py): values, expiry, atomic operations, batches, namespaces, large
values, signing, the in-process tier, read-through, leases, pickle, errors, threads, fork,
interpreter exit, Ctrl-C and asyncio.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import dynacache
from dynacache import errors

PY = sys.executable

#: A bound for calls that must fail or finish "quickly": generous, the machine may be busy.
BOUND = 30.0


class Point:
    """A custom class, stored only with pickle=True."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def run_in_thread(fn, timeout=BOUND):
    """Runs ``fn`` in a daemon thread and returns its result, failing (instead of hanging the
    suite) when it does not finish within ``timeout``."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} did not finish within {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def run_python(code, timeout=60, **kwargs):
    """Runs ``code`` in a fresh interpreter; its CompletedProcess (fails on a hang)."""
    try:
        return subprocess.run(
            [PY, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the interpreter did not exit within {timeout} s: {e.stdout!r} {e.stderr!r}")


# ----- values ----------------------------------------------------------------------------

PLAIN_VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative": -17,
    "i64_max": 2**63 - 1,
    "i64_min": -(2**63),
    "u64_max": 2**64 - 1,
    "float": 1.5,
    "float_integral": 2.0,
    "float_inf": math.inf,
    "empty_str": "",
    "unicode_str": "héllo ✓ 日本 \U0001f600",
    "empty_bytes": b"",
    "bytes": bytes(range(256)),
    "empty_list": [],
    "list": [1, "a", None, 2.5, b"\x00", [True, []]],
    "empty_dict": {},
    "dict": {"name": "Alice", "langs": ["Rust", "Python"], "n": 3},
    "nested_dict_int_keys": {1: {"x": [1.5, b"b"]}, "s": {2: None, -3: {4: "deep"}}},
}


@pytest.mark.parametrize("value", list(PLAIN_VALUES.values()), ids=list(PLAIN_VALUES))
def test_plain_values_round_trip_with_their_types(cache, value):
    cache.set("k", value)
    got = cache.get("k")
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, dict):
        for k in value:  # int keys stay ints, str keys stay strs
            assert any(type(g) is type(k) and g == k for g in got)


def test_float_nan_round_trips(cache):
    cache.set("nan", math.nan)
    assert math.isnan(cache.get("nan"))


def test_tuples_read_back_as_lists_and_bytearray_as_bytes(cache):
    cache.set("t", (1, (2, "three"), [4, (5,)]))
    assert cache.get("t") == [1, [2, "three"], [4, [5]]]
    assert type(cache.get("t")[1]) is list
    cache.set("ba", bytearray(b"\x01\x02"))
    assert cache.get("ba") == b"\x01\x02" and type(cache.get("ba")) is bytes


def test_tuple_dict_keys_come_back_hashable(cache):
    cache.set("d", {(1, 2): "a", "b": 1})
    assert cache.get("d") == {(1, 2): "a", "b": 1}


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [1, 2**70], {"n": -(2**100)}])
def test_integers_beyond_64_bits_are_type_errors_and_store_nothing(cache, value):
    cache.set("k", "before")
    with pytest.raises(TypeError):
        cache.set("k", value)
    assert cache.get("k") == "before"


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, dt.datetime(2020, 1, 1), Point(1, 2), [1, object()], {"a": frozenset()}],
    ids=["object", "set", "datetime", "custom", "nested_object", "nested_frozenset"],
)
def test_other_objects_are_type_errors_without_pickle(cache, value):
    with pytest.raises(TypeError, match="pickle=True"):
        cache.set("k", value)
    assert not cache.has("k")


def test_a_stored_none_is_not_a_miss(cache):
    cache.set("n", None)
    assert cache.get("n", "default") is None
    assert cache.has("n") and "n" in cache
    assert cache.get("missing", "default") == "default"
    assert cache.get("missing") is None


def test_str_and_bytes_keys(cache):
    cache.set("é", 1)
    assert cache.get("é".encode()) == 1  # a str key is its UTF-8 bytes
    cache.set(b"\xff\x00raw", 2)
    assert cache.get(b"\xff\x00raw") == 2
    assert sorted(cache.keys(), key=repr) == sorted(["é", b"\xff\x00raw"], key=repr)
    assert type(next(k for k in cache.keys() if k != "é")) is bytes


def test_long_keys_up_to_the_limit(cache):
    long_key = "x" * dynacache.MAX_KEY_LEN  # stored under its hash, compared on read
    other = "x" * (dynacache.MAX_KEY_LEN - 1) + "y"
    cache.set(long_key, "long")
    cache.set(other, "other")
    assert cache.get(long_key) == "long"
    assert cache.get(other) == "other"
    assert sorted(cache.keys()) == sorted([long_key, other])


def test_values_are_shared_between_handles(make_cache):
    a, b = make_cache(), make_cache(consistent_reads=True)
    a.set("k", {"v": 1})
    assert b.get("k") == {"v": 1}
    b.delete("k")
    assert a.get("k") is None


def test_attributes(make_cache, engine):
    c = make_cache(pickle=True)
    assert c.table_name == engine.table
    assert c.namespace == engine.namespace
    assert c.pickle is True and c.closed is False
    assert isinstance(c.engine, str) and c.engine
    assert engine.namespace in repr(c)


# ----- expiry ----------------------------------------------------------------------------


def test_values_expire(cache):
    cache.set("secs", 1, ttl=1)
    cache.set("delta", "v", ttl=dt.timedelta(seconds=1))
    cache.set("float", [1], ttl=0.5)
    cache.set("touched", "t", ttl=1)
    cache.set("forever", "f")
    cache.inc("counter", 5, ttl=1)
    assert cache.get("secs") == 1 and cache.get("delta") == "v" and cache.get("float") == [1]
    assert cache.touch("touched", 60)
    time.sleep(1.5)
    for key in ("secs", "delta", "float", "counter"):
        assert cache.get(key) is None, key
        assert not cache.has(key) and key not in cache
        assert cache.ttl(key) is None
    assert cache.get_many(["secs", "forever", "delta"]) == [None, "f", None]
    assert cache.get("touched") == "t" and 50 < cache.ttl("touched") <= 60
    assert sorted(cache.keys()) == ["forever", "touched"]
    assert cache.len() == 2
    # An expired key: add stores, delete finds nothing live, touch has nothing to touch,
    # and an expired counter starts again from zero.
    assert not cache.touch("delta", 60)
    assert not cache.delete("float")
    assert cache.add("secs", "again")
    assert cache.get("secs") == "again"
    assert cache.inc("counter") == 1


def test_ttl_values(cache):
    assert cache.ttl("missing") is None
    cache.set("never", 1, ttl=dynacache.NEVER)
    assert cache.ttl("never") == math.inf
    cache.set("default", 1)
    assert cache.ttl("default") == math.inf
    cache.set("secs", 1, ttl=60)
    assert 55 < cache.ttl("secs") <= 60
    cache.set("delta", 1, ttl=dt.timedelta(hours=1))
    assert 3595 < cache.ttl("delta") <= 3600
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    cache.set("at", 1, ttl=at)
    assert 595 < cache.ttl("at") <= 600


def test_datetime_in_the_past_is_a_miss(cache):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    cache.set("p", "v", ttl=past)
    assert cache.get("p") is None and not cache.has("p") and cache.ttl("p") is None
    cache.set("naive", "v", ttl=dt.datetime.now() - dt.timedelta(seconds=5))  # local time
    assert cache.get("naive") is None
    assert cache.keys() == [] and cache.len() == 0


def test_default_ttl(make_cache):
    c = make_cache(default_ttl=60)
    c.set("k", 1)
    assert 55 < c.ttl("k") <= 60
    c.set("forever", 1, ttl=dynacache.NEVER)
    assert c.ttl("forever") == math.inf
    c.inc("n")
    assert 55 < c.ttl("n") <= 60
    d = make_cache(default_ttl=dt.timedelta(minutes=5))
    d.set("k2", 1)
    assert 295 < d.ttl("k2") <= 300


def test_touch(cache):
    assert not cache.touch("missing", 60)
    cache.set("k", "v", ttl=10)
    assert cache.touch("k", 100)
    assert 95 < cache.ttl("k") <= 100
    assert cache.touch("k", dt.timedelta(seconds=1000))
    assert 995 < cache.ttl("k") <= 1000
    # touch never shortens a lifetime (README: "sliding expiry ... never shortens a lifetime")
    assert cache.touch("k", 10)
    assert cache.ttl("k") > 900
    assert cache.get("k") == "v"


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, dt.timedelta(seconds=-1), -math.inf])
def test_negative_or_nan_ttl_is_a_value_error(cache, bad):
    with pytest.raises(ValueError):
        cache.set("k", 1, ttl=bad)
    with pytest.raises(ValueError):
        cache.touch("k", bad)
    with pytest.raises(ValueError):
        cache.lease("l", bad)
    assert not cache.has("k")


def test_ttl_of_the_wrong_type_is_a_type_error(cache):
    with pytest.raises(TypeError):
        cache.set("k", 1, ttl="10m")
    assert not cache.has("k")


# ----- add, delete, counters --------------------------------------------------------------


def test_add_only_when_absent(cache):
    assert cache.add("k", "first")
    assert not cache.add("k", "second")
    assert cache.get("k") == "first"
    cache.set("gone", 1, ttl=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
    assert cache.add("gone", 2)  # expired counts as absent
    assert cache.get("gone") == 2


def test_add_is_atomic_across_threads(make_cache):
    handles = [make_cache() for _ in range(4)]
    barrier = threading.Barrier(8)
    wins = []

    def adder(i):
        barrier.wait()
        if handles[i % 4].add("once", i):
            wins.append(i)

    threads = [threading.Thread(target=adder, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert len(wins) == 1
    assert handles[0].get("once") == wins[0]


def test_delete_returns_whether_a_value_was_there(cache):
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.delete("never-set") is False
    assert cache.get("k") is None


def test_inc_dec(cache):
    assert cache.inc("n") == 1
    assert cache.inc("n", 5) == 6
    assert cache.dec("n") == 5
    assert cache.dec("n", 10) == -5
    assert cache.inc("n", -1) == -6
    assert cache.get("n") == -6 and type(cache.get("n")) is int
    assert cache.dec("fresh", 3) == -3
    cache.set("set_int", 41)  # an int set is a counter
    assert cache.inc("set_int") == 42


def test_inc_keeps_an_existing_counters_expiry(cache):
    cache.inc("n", 1, ttl=100)
    assert 95 < cache.ttl("n") <= 100
    assert cache.inc("n", 1, ttl=1000) == 2
    assert cache.ttl("n") <= 100


def test_inc_is_atomic_across_threads(make_cache):
    handles = [make_cache() for _ in range(2)]

    def incs(i):
        for _ in range(50):
            handles[i % 2].inc("hits")

    threads = [threading.Thread(target=incs, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert handles[0].get("hits") == 400


@pytest.mark.parametrize("value", ["text", 1.5, True, [1], {"a": 1}, b"\x01", None, 2**64 - 1])
def test_inc_of_a_non_counter_is_a_decode_error(cache, value):
    cache.set("k", value)
    with pytest.raises(dynacache.DecodeError):
        cache.inc("k")
    with pytest.raises(dynacache.DecodeError):
        cache.dec("k")
    assert cache.get("k") == value


def test_dec_by_the_smallest_int_is_refused(cache):
    with pytest.raises(ValueError):
        cache.dec("k", -(2**63))
    with pytest.raises((OverflowError, TypeError)):
        cache.inc("k", 2**63)


def test_inc_past_the_64_bit_range_leaves_the_counter_readable(cache):
    """An overflowing increment must fail without damaging the counter."""
    cache.set("max", 2**63 - 1)
    with pytest.raises(dynacache.Error):
        cache.inc("max")
    assert cache.get("max") == 2**63 - 1


# ----- batches ---------------------------------------------------------------------------


def test_get_many_keeps_order_with_none_for_missing(cache):
    cache.set("a", 1)
    cache.set("b", {"x": 2})
    cache.set("n", None)
    assert cache.get_many(["b", "missing", "a", "n", "a"]) == [{"x": 2}, None, 1, None, 1]
    assert cache.get_many([]) == []
    assert cache.get_many(k for k in ("a", "b")) == [1, {"x": 2}]


def test_get_many_over_one_batch(cache):
    cache.set_many({f"k{i}": i for i in range(0, 250, 2)})
    got = cache.get_many([f"k{i}" for i in range(250)])
    assert got == [i if i % 2 == 0 else None for i in range(250)]


def test_set_many_from_dict_pairs_and_generators(cache):
    cache.set_many({"a": 1, "b": [2], "c": {"c": 3}})
    cache.set_many([("d", "four"), (b"e", b"five")])
    cache.set_many(((f"g{i}", i) for i in range(3)), ttl=60)
    assert cache.get_many(["a", "b", "c", "d", b"e", "g0", "g1", "g2"]) == [
        1, [2], {"c": 3}, "four", b"five", 0, 1, 2,
    ]
    assert cache.ttl("a") == math.inf
    assert 55 < cache.ttl("g2") <= 60
    cache.set_many({})


def test_set_many_over_one_batch_and_last_value_wins(cache):
    cache.set_many([(f"k{i}", f"v{i}") for i in range(60)] + [("k0", "last")])
    assert cache.len() == 60
    assert cache.get("k0") == "last" and cache.get("k59") == "v59"


def test_set_many_refuses_bad_entries_and_stores_nothing(cache):
    with pytest.raises(TypeError):
        cache.set_many([("ok", 1), ("bad", object())])
    with pytest.raises(TypeError):
        cache.set_many([("ok", 1), (3, "int key")])
    assert not cache.has("ok")


def test_delete_many(cache):
    cache.set_many({f"k{i}": i for i in range(40)})
    cache.delete_many([f"k{i}" for i in range(30)] + ["never-set"])
    assert sorted(cache.keys()) == sorted(f"k{i}" for i in range(30, 40))
    cache.delete_many([])


def test_batch_calls_take_iterables_of_keys_not_one_key(cache):
    with pytest.raises(TypeError):
        cache.get_many("abc")
    with pytest.raises(TypeError):
        cache.delete_many(b"abc")
    with pytest.raises(TypeError):
        cache.get_many(["a", 1])


# ----- namespaces --------------------------------------------------------------------------


def test_keys_len_clear_stay_in_their_namespace(make_cache, engine):
    mine = make_cache()
    other = make_cache(namespace=engine.namespace + "-other")
    mine.set_many({"a": 1, "b": 2})
    mine.inc("counter")
    other.set_many({"a": "other a", "z": 26})
    assert sorted(mine.keys()) == ["a", "b", "counter"]
    assert mine.len() == len(mine) == 3
    assert sorted(other.keys()) == ["a", "z"]
    assert mine.clear() == 3
    assert mine.keys() == [] and mine.len() == 0 and mine.get("a") is None
    assert sorted(other.keys()) == ["a", "z"]
    assert other.get("a") == "other a" and len(other) == 2
    assert mine.clear() == 0


def test_same_key_in_two_namespaces_is_two_values(make_cache, engine):
    a = make_cache(namespace=engine.namespace + "-a")
    b = make_cache(namespace=engine.namespace + "-b")
    a.set("k", "a")
    b.set("k", "b")
    assert (a.get("k"), b.get("k")) == ("a", "b")
    assert a.delete("k")
    assert b.get("k") == "b"


@pytest.mark.parametrize("namespace", ["", "has space", "colon:", "x" * 65, "ümlaut"])
def test_invalid_namespace_is_a_configuration_error(make_cache, namespace):
    with pytest.raises(dynacache.ConfigurationError):
        make_cache(namespace=namespace)


def test_invalid_table_name_is_a_configuration_error(make_cache):
    with pytest.raises(dynacache.ConfigurationError) as e:
        make_cache(table="x")
    assert isinstance(e.value, ValueError)


# ----- large values --------------------------------------------------------------------------


def test_a_2_mib_random_value_round_trips(cache):
    big = os.urandom(2 << 20)  # incompressible: chunked over several items
    cache.set("big", big)
    assert cache.get("big") == big
    assert cache.keys() == ["big"] and cache.len() == 1  # chunks are not keys
    assert cache.get_many(["big", "x"]) == [big, None]
    cache.set("big", "small now")
    assert cache.get("big") == "small now"
    cache.set("big", big)
    assert cache.delete("big")
    assert cache.get("big") is None


def test_a_5_mb_compressible_value_round_trips(make_cache):
    text = "".join(f"line {i} of a long document\n" for i in range(200_000))
    assert len(text) > 5_000_000
    c = make_cache()
    c.set("doc", text)
    assert c.get("doc") == text
    uncompressed = make_cache(compress_from=None)
    uncompressed.set("doc2", text)
    assert uncompressed.get("doc2") == text
    assert c.get("doc2") == text


def test_max_value_size_exceeded(make_cache):
    c = make_cache(max_value_size=1000)
    c.set("k", "before")
    with pytest.raises(dynacache.ValueTooLargeError) as e:
        c.set("k", os.urandom(2000))
    assert isinstance(e.value, ValueError) and isinstance(e.value, dynacache.Error)
    assert c.get("k") == "before"
    with pytest.raises(dynacache.ValueTooLargeError):
        c.set_many({"k2": os.urandom(2000)})
    assert not c.has("k2")
    c.set("small", os.urandom(500))


def test_a_value_accepted_under_max_value_size_reads_back(make_cache):
    """A value that compresses under max_value_size but decodes over it: set() may refuse it
    (ValueTooLargeError, nothing stored) or store it, but what set() accepts, get() returns."""
    c = make_cache(max_value_size=1000)
    text = "a" * 10_000  # compresses far below the limit
    try:
        c.set("k", text)
    except dynacache.ValueTooLargeError:
        assert not c.has("k")
    else:
        assert c.get("k") == text
        assert c.get_many(["k"]) == [text]


# ----- signing ------------------------------------------------------------------------------


def test_signed_values(make_cache):
    k1 = make_cache(secret_keys=[b"k1"])
    k2 = make_cache(secret_keys=[b"k2"])
    rotated = make_cache(secret_keys=[b"k2", b"k1"])  # k2 signs, both verify
    k1.set("v", {"signed": True})
    k1.set_many({"m": [1]})
    assert k1.get("v") == {"signed": True} and k1.get("m") == [1]
    with pytest.raises(dynacache.IntegrityError):
        k2.get("v")
    with pytest.raises(dynacache.IntegrityError):
        k2.get_many(["m"])
    assert rotated.get("v") == {"signed": True}
    rotated.set("r", "by k2")
    assert k2.get("r") == "by k2"
    with pytest.raises(dynacache.IntegrityError):
        k1.get("r")


def test_a_signing_cache_refuses_unsigned_values(make_cache):
    make_cache().set("plain", "unsigned")
    with pytest.raises(dynacache.IntegrityError):
        make_cache(secret_keys=[b"k1"]).get("plain")


def test_counters_are_not_signed(make_cache):
    k1 = make_cache(secret_keys=[b"k1"])
    k2 = make_cache(secret_keys=[b"k2"])
    assert k1.inc("n", 3) == 3
    assert k2.get("n") == 3
    assert k2.inc("n") == 4


def test_signed_large_values(make_cache):
    big = os.urandom(1 << 20)
    make_cache(secret_keys=[b"k1"]).set("big", big)
    assert make_cache(secret_keys=[b"k1"]).get("big") == big
    with pytest.raises(dynacache.IntegrityError):
        make_cache(secret_keys=[b"other"]).get("big")


def test_an_empty_secret_key_is_refused(make_cache):
    with pytest.raises(dynacache.ConfigurationError):
        make_cache(secret_keys=[b""])


# ----- the in-process tier ---------------------------------------------------------------------


def test_in_process_tier_own_changes_seen_at_once(make_cache):
    c = make_cache(in_process_bytes=1 << 20)
    c.set("k", {"v": 1})
    assert c.get("k") == {"v": 1}
    assert c.get("k") == {"v": 1}  # from memory
    c.set("k", {"v": 2})
    assert c.get("k") == {"v": 2}
    assert c.delete("k")
    assert c.get("k") is None and not c.has("k")
    c.inc("n")
    c.get("n")
    assert c.inc("n") == 2 and c.get("n") == 2
    c.set("a", 1)
    c.get("a")
    c.clear()
    assert c.get("a") is None


def test_in_process_tier_sees_other_handles_changes_within_its_ttl(make_cache):
    tiered = make_cache(in_process_bytes=1 << 20, in_process_ttl=0.3)
    other = make_cache()
    tiered.set("k", "v1")
    tiered.set("d", "to delete")
    assert tiered.get("k") == "v1" and tiered.get("d") == "to delete"
    other.set("k", "v2")
    other.delete("d")
    tiered.get("k")  # may still be v1: within the staleness bound
    time.sleep(0.6)
    assert tiered.get("k") == "v2"
    assert tiered.get("d") is None


def test_in_process_tier_never_serves_expired_values(make_cache):
    c = make_cache(in_process_bytes=1 << 20, in_process_ttl=60)
    c.set("k", "v", ttl=1)
    assert c.get("k") == "v"
    time.sleep(1.4)
    assert c.get("k") is None
    assert c.get_many(["k"]) == [None]


# ----- read-through ---------------------------------------------------------------------------


def test_get_or_set_computes_once(cache):
    calls = []

    def factory():
        calls.append(1)
        return {"computed": len(calls)}

    assert cache.get_or_set("k", factory, ttl=60) == {"computed": 1}
    assert cache.get_or_set("k", factory) == {"computed": 1}
    assert len(calls) == 1
    assert cache.get("k") == {"computed": 1}
    assert 55 < cache.ttl("k") <= 60
    cache.set("existing", "there")
    assert cache.get_or_set("existing", factory) == "there"
    assert len(calls) == 1


class FactoryFailed(Exception):
    pass


def test_get_or_set_factory_exception_propagates_and_stores_nothing(cache):
    def boom():
        raise FactoryFailed("nope")

    with pytest.raises(FactoryFailed, match="nope"):
        cache.get_or_set("k", boom)
    assert not cache.has("k")
    assert cache.get_or_set("k", lambda: "then ok") == "then ok"


def test_get_or_set_factory_returning_non_plain_data(cache):
    with pytest.raises(TypeError):
        cache.get_or_set("k", lambda: object())
    assert not cache.has("k")


def test_get_or_set_factory_may_use_the_cache(cache):
    cache.set("dep", 20)

    def factory():
        return cache.get("dep") + cache.inc("calls")

    assert run_in_thread(lambda: cache.get_or_set("k", factory)) == 21


def test_concurrent_get_or_set_calls_the_factory_once(cache):
    calls = []
    barrier = threading.Barrier(8)
    results = []

    def factory():
        calls.append(1)
        time.sleep(0.3)
        return ["value", len(calls)]

    def worker():
        barrier.wait()
        results.append(cache.get_or_set("k", factory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert len(calls) == 1
    assert results == [["value", 1]] * 8


def test_get_or_set_with_fleet_lease_computes_once_across_handles(make_cache):
    a = make_cache(fleet_lease=10)
    b = make_cache(fleet_lease=10)  # another handle: like another process
    started = threading.Event()
    calls = []

    def slow():
        calls.append("a")
        started.set()
        time.sleep(0.5)
        return "from a"

    def other():
        calls.append("b")
        return "from b"

    t = threading.Thread(target=lambda: a.get_or_set("k", slow))
    t.start()
    assert started.wait(BOUND)
    assert run_in_thread(lambda: b.get_or_set("k", other)) == "from a"
    t.join(BOUND)
    assert calls == ["a"]


def test_get_or_set_never_fails_on_an_unreachable_cache():
    # README: "a cache failure never fails it": the factory's value is returned all the same.
    c = dynacache.Cache(
        "py_unreachable", endpoint_url="http://127.0.0.1:9", create_table=False,
        connect_timeout=0.2, operation_timeout=1,
    )
    try:
        assert c.get_or_set("k", lambda: {"fresh": 1}) == {"fresh": 1}
    finally:
        c.close()


# ----- leases --------------------------------------------------------------------------------


def test_leases(make_cache):
    a, b = make_cache(), make_cache()
    lease = a.lease("job", 10)
    assert isinstance(lease, dynacache.Lease)
    assert lease.held and lease.name == "job" and isinstance(lease.token, int)
    assert time.time() + 5 < lease.expires <= time.time() + 10.5
    assert b.lease("job", 10) is None
    assert a.lease("job", 10) is None  # held, also for its own cache
    assert a.lease("other job", 10) is not None
    before = lease.expires
    assert a.renew(lease, 60)
    assert lease.expires > before + 40
    first = lease.token
    assert a.release(lease) is True
    assert not lease.held and lease.token is None
    assert a.release(lease) is False
    assert a.renew(lease, 10) is False
    again = b.lease("job", 10)
    assert again is not None and again.token > first


def test_an_expired_lease_can_be_taken_over(make_cache):
    a, b = make_cache(), make_cache()
    old = a.lease("job", 1)
    assert old is not None
    time.sleep(1.4)
    new = b.lease("job", 10)
    assert new is not None and new.token > old.token
    assert a.renew(old, 10) is False
    assert b.lease("job", 10) is None


def test_leases_and_values_do_not_collide(cache):
    cache.set("name", "a value")
    lease = cache.lease("name", 10)
    assert lease is not None
    assert cache.get("name") == "a value"
    assert cache.keys() == ["name"]


# ----- pickle --------------------------------------------------------------------------------


def test_pickle_stores_objects_and_only_pickle_caches_read_them(make_cache):
    p = make_cache(pickle=True)
    plain = make_cache()
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    p.set("when", when)
    p.set("point", Point(1, [2, 3]))
    p.set("mixed", {"a": 1, "at": when})  # not plain data as a whole: pickled
    p.set("huge_int", 2**100)
    assert p.get("when") == when
    assert p.get("point") == Point(1, [2, 3])
    assert p.get("mixed") == {"a": 1, "at": when}
    assert p.get("huge_int") == 2**100
    assert p.get_many(["point", "x"]) == [Point(1, [2, 3]), None]
    for key in ("when", "point", "mixed", "huge_int"):
        with pytest.raises(dynacache.DecodeError, match="pickle=True"):
            plain.get(key)
    with pytest.raises(dynacache.DecodeError):
        plain.get_many(["when"])
    # Deleting and listing work without unpickling.
    assert sorted(plain.keys()) == ["huge_int", "mixed", "point", "when"]
    assert plain.delete("when")


def test_pickle_keeps_plain_data_plain(make_cache):
    p = make_cache(pickle=True)
    p.set("d", {"a": [1, 2]})
    p.set("t", (1, 2))
    assert make_cache().get("d") == {"a": [1, 2]}
    assert p.get("t") == [1, 2]  # tuples are plain data: lists, as without pickle
    p.set("n", 5)
    assert p.inc("n") == 6


def test_pickle_in_get_or_set(make_cache):
    p = make_cache(pickle=True)
    when = dt.date(2020, 2, 29)
    assert p.get_or_set("d", lambda: when) == when
    assert p.get("d") == when


def test_an_unpicklable_value_is_an_encode_error(make_cache):
    p = make_cache(pickle=True)
    with pytest.raises(dynacache.EncodeError) as e:
        p.set("f", lambda: 1)
    assert isinstance(e.value, TypeError)
    with pytest.raises(dynacache.EncodeError):
        p.set("lock", threading.Lock())
    assert not p.has("f") and not p.has("lock")


# ----- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, 1.5, None, ["k"], ("k",), bytearray(b"k"), object()])
def test_keys_of_other_types_are_type_errors(cache, key):
    with pytest.raises(TypeError):
        cache.get(key)
    with pytest.raises(TypeError):
        cache.set(key, 1)
    with pytest.raises(TypeError):
        cache.delete(key)
    with pytest.raises(TypeError):
        key in cache
    with pytest.raises(TypeError):
        cache.inc(key)
    with pytest.raises(TypeError):
        cache.lease(key, 1)


@pytest.mark.parametrize("key", ["", b"", "x" * (dynacache.MAX_KEY_LEN + 1), b"x" * (dynacache.MAX_KEY_LEN + 1)],
                         ids=["empty_str", "empty_bytes", "long_str", "long_bytes"])
def test_empty_and_over_long_keys_are_invalid_key_errors(cache, key):
    for call in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.add(key, 1),
        lambda: cache.delete(key),
        lambda: cache.has(key),
        lambda: cache.inc(key),
        lambda: cache.ttl(key),
        lambda: cache.get_many(["ok", key]),
        lambda: cache.set_many({key: 1}),
        lambda: cache.delete_many([key]),
        lambda: cache.touch(key, 10),
    ):
        with pytest.raises(dynacache.InvalidKeyError) as e:
            call()
        assert isinstance(e.value, ValueError)
    # Read-through never fails for the cache's sake (src/kv/read_through.rs: "A key the cache
    # cannot hold: nothing to share, compute"): the factory's value, nothing stored.
    assert cache.get_or_set(key, lambda: "computed") == "computed"
    assert cache.keys() == []


def test_an_over_long_multibyte_key_is_measured_in_bytes(cache):
    key = "é" * (dynacache.MAX_KEY_LEN // 2 + 1)  # fewer characters than the limit, more bytes
    with pytest.raises(dynacache.InvalidKeyError):
        cache.set(key, 1)


def test_error_hierarchy():
    assert issubclass(dynacache.TimeoutError, TimeoutError)
    assert issubclass(dynacache.UnavailableError, ConnectionError)
    assert issubclass(dynacache.AccessDeniedError, PermissionError)
    for name in errors.__all__:
        cls = getattr(dynacache, name)
        assert cls is getattr(errors, name)
        assert issubclass(cls, dynacache.Error)


# ----- lifecycle -----------------------------------------------------------------------------


def test_a_closed_cache_raises_closed_error(make_cache):
    c = make_cache()
    c.set("k", 1)
    c.close()
    assert c.closed
    for call in (
        lambda: c.get("k"),
        lambda: c.set("k", 2),
        lambda: c.delete("k"),
        lambda: "k" in c,
        lambda: c.get_many(["k"]),
        lambda: c.inc("k"),
        lambda: c.keys(),
        lambda: len(c),
        lambda: c.clear(),
        lambda: c.get_or_set("k", lambda: 1),
        lambda: c.lease("l", 1),
    ):
        with pytest.raises(dynacache.ClosedError):
            call()
    c.close()  # twice is fine
    assert "closed" in repr(c)
    assert make_cache().get("k") == 1  # closing stored nothing away


def test_context_manager_closes(make_cache):
    with make_cache() as c:
        c.set("k", 1)
        assert not c.closed
    assert c.closed
    with pytest.raises(dynacache.ClosedError):
        c.get("k")
    with pytest.raises(FactoryFailed):
        with make_cache() as d:
            raise FactoryFailed()
    assert d.closed


def test_a_lease_released_after_close_raises_closed_error(make_cache):
    c = make_cache()
    lease = c.lease("l", 10)
    c.close()
    with pytest.raises(dynacache.ClosedError):
        c.release(lease)


def test_unreachable_endpoint_fails_fast():
    started = time.monotonic()
    with pytest.raises((dynacache.UnavailableError, dynacache.TimeoutError)) as e:
        dynacache.Cache("py_unreachable", endpoint_url="http://127.0.0.1:9",
                        connect_timeout=0.2, operation_timeout=1)
    assert isinstance(e.value, dynacache.Error)
    assert time.monotonic() - started < BOUND


def test_unreachable_endpoint_with_create_table_false_fails_at_first_call():
    c = dynacache.Cache("py_unreachable", endpoint_url="http://127.0.0.1:9", create_table=False,
                        connect_timeout=0.2, operation_timeout=1)
    try:
        with pytest.raises((dynacache.UnavailableError, dynacache.TimeoutError)):
            c.get("k")
        with pytest.raises((dynacache.UnavailableError, dynacache.TimeoutError)):
            c.set("k", 1)
    finally:
        c.close()


@pytest.fixture
def silent_server():
    """An endpoint that accepts TCP connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns = []

    def accept():
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()
    for c in conns:
        c.close()


def test_an_endpoint_that_never_answers_times_out(silent_server):
    c = dynacache.Cache("py_silent", endpoint_url=silent_server, create_table=False,
                        connect_timeout=0.2, operation_timeout=1)
    started = time.monotonic()
    with pytest.raises(dynacache.TimeoutError) as e:
        c.get("k")
    assert isinstance(e.value, TimeoutError)
    assert time.monotonic() - started < BOUND
    c.close()


def test_missing_table_with_create_table_false(engine):
    # The table is assumed to exist: the error comes at the first call (or at the open).
    with pytest.raises(dynacache.TableNotFoundError) as e:
        c = engine.open(table=f"py_missing_{uuid.uuid4().hex[:12]}", create_table=False)
        c.get("k")
    assert isinstance(e.value, dynacache.ConfigurationError)


def test_create_table_false_on_an_existing_table(make_cache):
    make_cache().set("k", "v")
    assert make_cache(create_table=False).get("k") == "v"


# ----- threads and the GIL ---------------------------------------------------------------------


def test_threads_see_their_own_values(cache):
    failures = []

    def worker(i):
        try:
            for j in range(10):
                value = {"thread": i, "round": j, "blob": os.urandom(64)}
                cache.set(f"t{i}", value)
                got = cache.get(f"t{i}")
                if got != value:
                    failures.append((i, j, got))
        except Exception as e:  # noqa: BLE001
            failures.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert failures == []
    assert len(cache) == 16


def test_other_threads_run_while_a_thread_does_gets(cache):
    cache.set("k", "v")
    stop = threading.Event()
    gets = [0]

    def getter():
        while not stop.is_set():
            assert cache.get("k") == "v"
            gets[0] += 1

    t = threading.Thread(target=getter)
    t.start()
    try:
        while gets[0] < 20:  # wait until the getter is busy
            time.sleep(0.001)
        counted = 0
        for _ in range(200_000):
            counted += 1
    finally:
        stop.set()
        t.join(BOUND)
    assert counted == 200_000
    assert gets[0] >= 20


class _EmptyGetItem(http.server.BaseHTTPRequestHandler):
    """A DynamoDB endpoint written in Python, which answers every call with ``{}``."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_gil_is_released_during_a_call(monkeypatch):
    """The endpoint is a Python thread of this process: a get can only finish if that thread
    runs while the calling thread waits in the native call."""
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyGetItem)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = dynacache.Cache("py_gil", endpoint_url=f"http://127.0.0.1:{srv.server_address[1]}",
                            create_table=False, operation_timeout=10)
        assert c.get("k") is None
        assert c.get_many(["a", "b"]) == [None, None]
        c.close()
    finally:
        srv.shutdown()
        srv.server_close()


# ----- fork, exit, Ctrl-C ----------------------------------------------------------------------

# A child forked from a parent whose runtime and embedded engine have threads parked used to die
# now and then (a few in 50) walking the parent's dead threads in parking_lot's global table;
# the workspace patches parking_lot_core so a child starts from an empty table
# (vendor/parking_lot_core/PATCHED.md). These tests are strict on both engines.


def _wait_child(pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not exit within {timeout} s")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_fork_child_uses_the_cache_and_the_parent_keeps_working(make_cache):
    c = make_cache()
    c.set("parent", "before fork")
    c.inc("n")
    tiered = make_cache(in_process_bytes=1 << 20)
    tiered.set("t", 1)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            ok = c.get("parent") == "before fork"
            c.set("child", {"pid": os.getpid()})
            ok = ok and c.get("child") == {"pid": os.getpid()}
            ok = ok and c.inc("n") == 2
            ok = ok and tiered.get("t") == 1
            status = 0 if ok else 3
        except BaseException:  # noqa: BLE001
            status = 2
        finally:
            os._exit(status)
    assert _wait_child(pid) == 0
    assert c.get("child") == {"pid": pid}
    assert c.get("n") == 2
    c.set("parent", "after fork")
    assert c.get("parent") == "after fork"
    assert c.inc("n") == 3
    assert tiered.get("t") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_repeated_forks_all_succeed(make_cache):
    """A prefork server forks many workers from one parent: every child must work.

    ``DYNACACHE_TEST_FORKS=1000`` forks more (the embedded engine's children used to die about
    1 in 20 before parking_lot_core was patched, vendor/parking_lot_core/PATCHED.md)."""
    forks = int(os.environ.get("DYNACACHE_TEST_FORKS", "50"))
    c = make_cache()
    statuses = []
    for i in range(forks):
        c.set("parent", i)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                c.set(f"child{i}", i)
                status = 0 if (c.get(f"child{i}"), c.get("parent")) == (i, i) else 3
            except BaseException:  # noqa: BLE001
                status = 2
            finally:
                os._exit(status)
        statuses.append(_wait_child(pid))
    # A child killed by a signal shows as a negative status (-6: SIGABRT, -11: SIGSEGV).
    failed = {i: s for i, s in enumerate(statuses) if s != 0}
    assert failed == {}, f"{len(failed)} of {forks} children failed: {failed}"
    assert c.get_many([f"child{i}" for i in range(forks)]) == list(range(forks))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_fork_after_async_use(engine):
    async def use(a):
        await a.set("k", "parent")
        return await a.get("k")

    a = dynacache.AsyncCache(**engine.options())
    engine.opened.append(a.sync)
    assert asyncio.run(use(a)) == "parent"
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            async def child():
                await a.set("child", "yes")
                return await a.get("k")

            status = 0 if asyncio.run(child()) == "parent" else 3
        except BaseException:  # noqa: BLE001
            status = 2
        finally:
            os._exit(status)
    assert _wait_child(pid) == 0
    assert asyncio.run(a.get("child")) == "yes"


def test_interpreter_exit_does_not_hang(engine):
    code = """
        import json, sys, threading, dynacache
        options = json.loads(sys.argv[1])
        c = dynacache.Cache(**options)
        c.set("a", 1)
        assert c.get("a") == 1
        # Left open, with a tiered handle and an async one too.
        t = dynacache.Cache(in_process_bytes=1 << 20, **options)
        t.get("a")
        import asyncio
        async def use_async():
            a = await dynacache.AsyncCache.open(**options)
            return await a.get("a")
        assert asyncio.run(use_async()) == 1
        print("done")
    """
    r = subprocess.run([PY, "-c", textwrap.dedent(code), json.dumps(engine.options())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "done"
    assert dynacache.Cache(**engine.options()).get("a") == 1


def test_interpreter_exit_in_a_forked_child_does_not_hang(engine):
    code = """
        import json, os, sys, dynacache
        c = dynacache.Cache(**json.loads(sys.argv[1]))
        c.set("a", 1)
        pid = os.fork()
        if pid == 0:
            c.set("child", 2)
            sys.exit(0)          # a normal exit, finalizers and all
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), c.get("child"))
    """
    r = subprocess.run([PY, "-c", textwrap.dedent(code), json.dumps(engine.options())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "2"]


def test_ctrl_c_during_get_or_set_raises_keyboard_interrupt(tmp_path):
    code = f"""
        import os, signal, threading, time, dynacache
        c = dynacache.Cache(embedded_file={str(tmp_path / "c.db")!r})
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            c.get_or_set("k", lambda: time.sleep(5) or 1)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - started)
        # The cache keeps working, and the interrupted computation stored nothing.
        assert c.get_or_set("k", lambda: 2) == 2
        c.set("z", 3)
        assert c.get("z") == 3
        print("ok")
    """
    started = time.monotonic()
    r = run_python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].startswith("interrupted"), r.stdout
    assert float(lines[0].split()[1]) < 4.0  # well before the factory's 5 s
    assert lines[1] == "ok"
    assert time.monotonic() - started < BOUND


def test_ctrl_c_during_a_call_to_a_silent_endpoint(silent_server):
    code = f"""
        import os, signal, threading, time, dynacache
        c = dynacache.Cache("py_silent", endpoint_url={silent_server!r}, create_table=False,
                            operation_timeout=20)
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            c.get("k")
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - started)
    """
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}
    r = run_python(code, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("interrupted"), r.stdout + r.stderr
    assert float(r.stdout.split()[1]) < 10.0  # far before the 20 s operation timeout


# ----- asyncio ---------------------------------------------------------------------------------


def test_async_cache_basics(engine):
    async def main():
        a = await dynacache.AsyncCache.open(**engine.options())
        assert isinstance(a.sync, dynacache.Cache)
        await a.set("k", {"v": [1, 2]}, ttl=60)
        assert await a.get("k") == {"v": [1, 2]}
        assert await a.get("missing", "dflt") == "dflt"
        assert await a.has("k") and not await a.has("missing")
        assert await a.add("new", 1) and not await a.add("new", 2)
        assert await a.inc("n", 5) == 5 and await a.dec("n") == 4
        await a.set_many({"x": 1, "y": 2})
        await a.set_many([("z", 3)])
        assert await a.get_many(["x", "nope", "z"]) == [1, None, 3]
        await a.delete_many(["x"])
        assert await a.delete("y") and not await a.delete("y")
        assert 55 < await a.ttl("k") <= 60
        assert await a.touch("k", 600)
        assert sorted(await a.keys()) == ["k", "n", "new", "z"]
        assert await a.len() == 4
        assert await a.clear() == 4
        assert await a.keys() == []
        lease = await a.lease("l", 10)
        assert lease is not None and await a.lease("l", 10) is None
        assert await a.renew(lease, 20) and await a.release(lease)
        assert await a.get_or_set("g", lambda: "sync factory") == "sync factory"
        await a.close()
        assert a.closed
        with pytest.raises(dynacache.ClosedError):
            await a.get("k")

    asyncio.run(main())


def test_async_concurrent_gets(engine):
    async def main():
        async with await dynacache.AsyncCache.open(**engine.options()) as a:
            await a.set_many({f"k{i}": {"i": i} for i in range(64)})
            got = await asyncio.gather(*(a.get(f"k{i}") for i in range(64)))
            assert got == [{"i": i} for i in range(64)]
        assert a.closed

    asyncio.run(main())


def test_async_cache_constructor_and_context_manager(engine):
    a = dynacache.AsyncCache(**engine.options(pickle=True))
    assert a.sync.pickle

    async def main():
        async with a:
            await a.set("p", Point(3, 4))
            assert await a.get("p") == Point(3, 4)

    asyncio.run(main())
    assert a.closed


def test_async_get_or_set_with_a_coroutine_factory_computes_once(engine):
    calls = []

    async def factory():
        calls.append(1)
        await asyncio.sleep(0.2)
        return {"computed": True}

    async def main():
        async with await dynacache.AsyncCache.open(**engine.options()) as a:
            ticks = 0

            async def ticker():
                nonlocal ticks
                for _ in range(10):
                    await asyncio.sleep(0.01)
                    ticks += 1

            results = await asyncio.gather(*(a.get_or_set("k", factory) for _ in range(8)), ticker())
            assert results[:8] == [{"computed": True}] * 8
            assert ticks == 10  # the loop kept running meanwhile
            assert await a.get("k") == {"computed": True}

    asyncio.run(main())
    assert len(calls) == 1


def test_async_errors_propagate(engine):
    async def main():
        async with await dynacache.AsyncCache.open(**engine.options()) as a:
            with pytest.raises(dynacache.InvalidKeyError):
                await a.get("")
            with pytest.raises(TypeError):
                await a.set("k", object())
            await a.set("s", "text")
            with pytest.raises(dynacache.DecodeError):
                await a.inc("s")

            async def boom():
                raise FactoryFailed("async")

            with pytest.raises(FactoryFailed):
                await a.get_or_set("f", boom)
            assert not await a.has("f")

    asyncio.run(main())


def test_async_open_failure_is_raised():
    async def main():
        with pytest.raises((dynacache.UnavailableError, dynacache.TimeoutError)):
            await dynacache.AsyncCache.open("py_unreachable", endpoint_url="http://127.0.0.1:9",
                                            connect_timeout=0.2, operation_timeout=1)

    asyncio.run(main())
