"""dynacache.cachelib.DynamoDbCache against cachelib's documented interface, on both engines.

(cachelib's own DynamoDB test suite runs against it unchanged too: scripts/peer-suites.)
"""

import datetime as dt
import os
import threading
import time
import uuid

import pytest

cachelib = pytest.importorskip("cachelib")

from cachelib.base import BaseCache  # noqa: E402
from cachelib.serializers import JSONSerializer  # noqa: E402

from dynacache.cachelib import DynamoDbCache  # noqa: E402

LOCAL = os.environ.get("DYNACACHE_TEST_DYNAMODB_LOCAL")


@pytest.fixture(params=["embedded", "dynamodb_local"])
def open_cache(request, tmp_path):
    """Opens drop-in caches on one table of the engine under test."""
    if request.param == "embedded":
        where = {"embedded_file": str(tmp_path / "cache.db")}
    else:
        if not LOCAL:
            pytest.skip("DYNACACHE_TEST_DYNAMODB_LOCAL is not set")
        # The peer's own arguments: an endpoint, a region and keys, as for boto3.
        where = {
            "endpoint_url": LOCAL,
            "region_name": "us-west-2",
            "aws_access_key_id": "local",
            "aws_secret_access_key": "local",
        }
    table = f"cachelib-{uuid.uuid4().hex[:12]}"
    opened = []

    def factory(**kwargs):
        c = DynamoDbCache(table_name=table, **{**where, **kwargs})
        opened.append(c)
        return c

    yield factory
    for c in opened:
        c.close()


def test_is_a_cachelib_cache_with_cachelibs_signature(open_cache):
    cache = open_cache(default_timeout=dt.timedelta(minutes=5), key_field="cache_key",
                       expiration_time_field="expiration_time", key_prefix="app:")
    assert isinstance(cache, BaseCache)
    assert cache.default_timeout == 300
    assert cache.key_prefix == "app:"


def test_return_values_are_cachelibs(open_cache):
    cache = open_cache()
    assert cache.get("missing") is None
    assert cache.set("k", {"a": [1, 2]}) is True
    assert cache.get("k") == {"a": [1, 2]}
    assert cache.add("k", "other") is False
    assert cache.add("new", "v") is True
    assert cache.has("k") is True and cache.has("missing") is False
    assert cache.delete("k") is True
    assert cache.get("k") is None
    assert cache.set_many({"a": 1, "b": "two"}) == ["a", "b"]
    assert cache.get_many("a", "b", "c") == [1, "two", None]
    assert cache.get_dict("a", "b") == {"a": 1, "b": "two"}
    assert cache.delete_many("a", "b", "never-there") == ["a", "b", "never-there"]
    assert cache.get_many("a", "b") == [None, None]
    assert cache.clear() is True


def test_timeout_zero_never_expires_and_others_do(open_cache):
    cache = open_cache(default_timeout=1)
    cache.set("default", 1)
    cache.set("forever", 2, timeout=0)
    cache.set("td", 3, timeout=dt.timedelta(seconds=1))
    time.sleep(2.2)
    assert cache.get("default") is None
    assert cache.get("td") is None
    assert cache.get("forever") == 2
    assert cache.add("default", "again") is True  # an expired key counts as absent


def test_key_prefix_separates_caches_on_one_table(open_cache):
    a = open_cache(key_prefix="a:")
    b = open_cache(key_prefix="b:")
    a.set("k", "from a")
    assert b.get("k") is None
    b.set("k", "from b")
    assert a.get("k") == "from a"
    assert open_cache().get("a:k") == "from a"


def test_inc_and_dec_are_atomic_across_threads(open_cache):
    cache = open_cache()
    assert cache.inc("n", 5) == 5
    assert cache.dec("n", 2) == 3

    def bump():
        for _ in range(25):
            cache.inc("hits")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("hits") == 200


def test_values_beyond_dynamodbs_item_limit(open_cache):
    cache = open_cache()
    big = os.urandom(2 * 1024 * 1024)
    assert cache.set("big", big) is True
    assert cache.get("big") == big


def test_any_picklable_object_as_cachelib_stores_it(open_cache):
    cache = open_cache()
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert cache.set("when", when) is True
    assert cache.get("when") == when
    assert cache.set("set", {1, 2, 3}) is True
    assert cache.get("set") == {1, 2, 3}


def test_an_injected_serializer_is_used(open_cache):
    cache = open_cache()
    cache.serializer = JSONSerializer()
    assert cache.set("k", {"a": 1})
    assert cache.get("k") == {"a": 1}
    plain = open_cache()
    assert plain.get("k") == b'{"a": 1}'  # stored as the serializer's bytes


def test_unreachable_engine_check_connection_raises_and_otherwise_misses():
    with pytest.raises(RuntimeError, match="could not connect to DynamoDB"):
        DynamoDbCache(endpoint_url="http://127.0.0.1:1", region_name="us-west-2", check_connection=True)
    lazy = DynamoDbCache(endpoint_url="http://127.0.0.1:1", region_name="us-west-2")
    assert lazy.get("k") is None
    assert lazy.set("k", 1) is False
    assert lazy.inc("n") is None
    assert lazy.has("k") is False


def test_unknown_keyword_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="no_such_option"):
        DynamoDbCache(embedded_file=str(tmp_path / "c.db"), no_such_option=1)


def test_flask_caching_uses_it_from_one_config_line(tmp_path):
    flask_caching = pytest.importorskip("flask_caching")
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)
    app.config.update(
        CACHE_TYPE="dynacache.cachelib.DynamoDbCache",
        CACHE_DEFAULT_TIMEOUT=60,
        CACHE_OPTIONS={"embedded_file": str(tmp_path / "flask.db"), "key_prefix": "flask:"},
    )
    cache = flask_caching.Cache(app)
    calls = []

    @app.route("/")
    @cache.cached()
    def index():
        calls.append(1)
        return "hello"

    client = app.test_client()
    assert client.get("/").data == b"hello"
    assert client.get("/").data == b"hello"
    assert len(calls) == 1
    with app.app_context():
        cache.set("k", [1, 2])
        assert cache.get("k") == [1, 2]
        assert isinstance(cache.cache, DynamoDbCache)
        assert cache.cache.key_prefix == "flask:"
        assert cache.cache.default_timeout == 60
