"""dynacache.requests_cache (DynamoDbCache, DynamoDbDict) under requests-cache's own sessions,
on both engines, against a local origin."""

import http.server
import os
import threading
import time
import uuid

import pytest

requests_cache = pytest.importorskip("requests_cache")

from dynacache.requests_cache import DynamoDbCache, DynamoDbDict  # noqa: E402

LOCAL = os.environ.get("DYNACACHE_TEST_DYNAMODB_LOCAL")


class Origin(http.server.ThreadingHTTPServer):
    """Counts requests; paths choose the answer."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits = {}
        self.conditional = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server_port}{path}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        origin = self.server
        origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
        if self.path.startswith("/redirect"):
            self.send_response(301)
            self.send_header("Location", "/fresh")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/etag"):
            if self.headers.get("If-None-Match") == '"v1"':
                origin.conditional += 1
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return
            body = b"tagged"
            self.send_response(200)
            self.send_header("ETag", '"v1"')
            self.send_header("Cache-Control", "max-age=0")
        else:
            size = 2 * 1024 * 1024 if self.path.startswith("/big") else 20 * 1024
            body = os.urandom(size // 2).hex().encode()
            self.send_response(200)
            self.send_header("Cache-Control", "max-age=1" if self.path.startswith("/short") else "max-age=600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def origin():
    server = Origin()
    yield server
    server.shutdown()


@pytest.fixture(params=["embedded", "dynamodb_local"])
def engine(request, tmp_path):
    if request.param == "embedded":
        return {"embedded_file": str(tmp_path / "cache.db")}
    if not LOCAL:
        pytest.skip("DYNACACHE_TEST_DYNAMODB_LOCAL is not set")
    return {
        "endpoint_url": LOCAL,
        "region_name": "us-east-1",
        "aws_access_key_id": "placeholder",
        "aws_secret_access_key": "placeholder",
    }


@pytest.fixture
def table():
    return f"rc_{uuid.uuid4().hex[:12]}"


def session(table, engine, **kwargs):
    return requests_cache.CachedSession(backend=DynamoDbCache(table, **engine, **kwargs))


def test_hits_come_from_the_table_with_requests_caches_policy(origin, engine, table):
    s = session(table, engine)
    url = origin.url(f"/fresh-{uuid.uuid4().hex}")
    first = s.get(url)
    second = s.get(url)
    assert not first.from_cache and second.from_cache
    assert second.content == first.content
    assert origin.hits[url[url.index("/fresh"):]] == 1
    # Another process (a new session on the same table and namespace) sees it too.
    assert session(table, engine).get(url).from_cache


def test_bodies_beyond_dynamodbs_item_limit(origin, engine, table):
    s = session(table, engine)
    url = origin.url(f"/big-{uuid.uuid4().hex}")
    first = s.get(url)
    assert len(first.content) == 2 * 1024 * 1024
    again = session(table, engine).get(url)
    assert again.from_cache and again.content == first.content


def test_revalidation_with_etag_answers_from_the_cache(origin, engine, table):
    s = requests_cache.CachedSession(backend=DynamoDbCache(table, **engine), cache_control=True)
    url = origin.url(f"/etag-{uuid.uuid4().hex}")
    before = origin.conditional
    assert s.get(url).text == "tagged"
    second = s.get(url)
    assert second.text == "tagged"
    assert origin.conditional == before + 1  # a 304, not a second body
    assert second.from_cache


def test_redirects_are_persisted_and_shared(origin, engine, table):
    s = session(table, engine)
    url = origin.url(f"/redirect-{uuid.uuid4().hex}")
    assert s.get(url).status_code == 200
    other = DynamoDbCache(table, **engine)
    assert len(other.redirects) >= 1
    assert session(table, engine).get(url).from_cache


def test_listing_filter_delete_and_clear_stay_in_the_namespace(origin, engine, table):
    a = requests_cache.CachedSession(backend=DynamoDbCache(table, namespace="a", **engine))
    b = requests_cache.CachedSession(backend=DynamoDbCache(table, namespace="b", **engine))
    urls = [origin.url(f"/fresh-{uuid.uuid4().hex}") for _ in range(3)]
    for u in urls:
        a.get(u)
    b.get(urls[0])
    assert len(a.cache.responses) == 3 and len(b.cache.responses) == 1
    assert sorted(r.url for r in a.cache.filter()) == sorted(urls)
    a.cache.delete(urls=[urls[0]])
    assert len(a.cache.responses) == 2
    assert not a.cache.contains(url=urls[0])
    a.cache.clear()
    assert len(a.cache.responses) == 0
    assert len(b.cache.responses) == 1


def test_expired_responses_leave_storage_after_the_stale_grace(origin, engine, table):
    s = requests_cache.CachedSession(backend=DynamoDbCache(table, stale_grace=0, **engine), expire_after=1)
    url = origin.url(f"/short-{uuid.uuid4().hex}")
    s.get(url)
    key = s.cache.create_key(s.prepare_request(requests_cache.Request("GET", url)))
    assert key in s.cache.responses
    time.sleep(2.2)
    assert key not in s.cache.responses  # checked on read, whatever DynamoDB's sweeper does


def test_install_cache_patches_requests(origin, engine, table):
    import requests

    requests_cache.install_cache(backend=DynamoDbCache(table, **engine))
    try:
        url = origin.url(f"/fresh-{uuid.uuid4().hex}")
        requests.get(url)
        assert requests.get(url).from_cache
    finally:
        requests_cache.uninstall_cache()


def test_storage_is_a_mutable_mapping(engine, table):
    d = DynamoDbDict(table, "plain", serializer=None, **engine)
    d["k1"] = "v1"
    d["k2"] = {"a": [1, 2]}
    assert d["k1"] == "v1" and d["k2"] == {"a": [1, 2]}
    assert len(d) == 2 and sorted(d) == ["k1", "k2"] and "k1" in d
    del d["k1"]
    with pytest.raises(KeyError):
        del d["k1"]
    with pytest.raises(KeyError):
        d["k1"]
    d.bulk_delete(["k2", "never-there"])
    assert len(d) == 0
