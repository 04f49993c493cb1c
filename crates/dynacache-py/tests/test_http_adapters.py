"""The requests adapter and the httpx transports on the Rust engine, against a local origin,
on both engines; entries shared with the CLI and ``dynacache serve``."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import os
import subprocess
import threading
import uuid
from typing import Any, Dict, Optional

import pytest

import dynacache

requests = pytest.importorskip("requests")
httpx = pytest.importorskip("httpx")
import dynacache.httpx  # noqa: E402
import dynacache.requests  # noqa: E402

from conftest import DUMMY_AWS, STEERING_ENV  # noqa: E402

BIG = 3 << 20


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.counts: Dict[str, int] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def count(self, path: str) -> int:
        with self.lock:
            return self.counts.get(path, 0)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(201, b"created")

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        server: Origin = self.server  # type: ignore[assignment]
        with server.lock:
            n = server.counts[path] = server.counts.get(path, 0) + 1
        if path.startswith("/fresh"):
            self._send(200, json.dumps({"n": n}).encode(), Cache_Control="max-age=600", Content_Type="application/json")
        elif path.startswith("/etag"):
            if self.headers.get("If-None-Match") == '"v1"':
                self._send(304, ETag='"v1"', Cache_Control="max-age=0")
            else:
                self._send(200, b"etagged", ETag='"v1"', Cache_Control="max-age=0")
        elif path.startswith("/vary"):
            lang = self.headers.get("Accept-Language", "none")
            self._send(200, f"{lang}:{n}".encode(), Vary="Accept-Language", Cache_Control="max-age=600")
        elif path.startswith("/nostore"):
            self._send(200, f"{n}".encode(), Cache_Control="no-store")
        elif path.startswith("/moved"):
            self._send(301, b"", Location="/fresh-target" + path, Cache_Control="max-age=600")
        elif path.startswith("/big"):
            self.send_response(200)
            self.send_header("Cache-Control", "max-age=600")
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            block = bytes(range(256)) * 256
            for _ in range(BIG // len(block)):
                self.wfile.write(block)
        elif path.startswith("/tagged"):
            # Tagged with the test's own suffix: every tagged path of a test shares one tag.
            group = "group-" + path.rsplit("-", 1)[-1]
            self._send(200, f"{path}:{n}".encode(), Cache_Control="max-age=600", Surrogate_Key=group)
        elif path.startswith("/flaky"):
            if n == 1:
                self._send(200, b"good", Cache_Control="max-age=0, stale-if-error=600", ETag='"f"')
            else:
                self._send(503, b"down")
        else:
            self._send(404, b"no")


_tag = [""]


def P(name: str) -> str:
    """A path of this test's own (the origin counts requests per path)."""
    return f"{name}-{_tag[0]}"


@pytest.fixture(autouse=True)
def path():
    _tag[0] = uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def origin():
    server = Origin()
    yield server
    server.shutdown()


class Client:
    """One front-end, through the same interface: ``get(url, **headers)`` returns
    ``(status, body, facts)``."""

    def __init__(self, kind: str, cache: dynacache.HttpCache) -> None:
        self.kind = kind
        self.cache = cache
        if kind == "requests":
            self.session = dynacache.requests.CachedSession(cache)
        elif kind == "httpx":
            self.client = httpx.Client(transport=dynacache.httpx.CacheTransport(cache=cache), follow_redirects=True)
        else:
            self.transport = dynacache.httpx.AsyncCacheTransport(cache=cache)

    def get(self, url: str, **headers: str):
        return self.request("GET", url, headers)

    def request(self, method: str, url: str, headers: Optional[Dict[str, str]] = None, data: bytes = b""):
        if self.kind == "requests":
            r = self.session.request(method, url, headers=headers, data=data or None)
            facts = {"from_cache": r.from_cache, "revalidated": r.revalidated, "stale": r.stale, "cache_status": r.cache_status}
            return r.status_code, r.content, facts
        if self.kind == "httpx":
            r = self.client.request(method, url, headers=headers, content=data or None)
            return r.status_code, r.content, r.extensions

        async def go():
            async with httpx.AsyncClient(transport=self.transport, follow_redirects=True) as c:
                r = await c.request(method, url, headers=headers, content=data or None)
                return r.status_code, r.content, r.extensions

        return asyncio.run(go())


@pytest.fixture
def http_cache(engine):
    caches = []

    def make(**kwargs: Any) -> dynacache.HttpCache:
        cache = dynacache.HttpCache(**engine.options(**kwargs))
        caches.append(cache)
        return cache

    yield make
    for c in caches:
        c.close()


@pytest.fixture(params=["requests", "httpx", "httpx_async"])
def client(request, http_cache):
    return Client(request.param, http_cache())


def test_fresh_responses_are_hits(path, client, origin):
    url = origin.base + P("/fresh")
    s1, b1, f1 = client.get(url)
    client.cache.flush()
    s2, b2, f2 = client.get(url)
    assert (s1, s2) == (200, 200)
    assert b1 == b2 and json.loads(b2) == {"n": 1}
    assert not f1["from_cache"] and f2["from_cache"]
    assert f2["cache_status"].startswith("dynacache; hit")
    assert origin.count(P("/fresh")) == 1


def test_stale_responses_are_revalidated_with_a_304(path, client, origin):
    before = origin.count(P("/etag"))
    client.get(origin.base + P("/etag"))
    client.cache.flush()
    status, body, facts = client.get(origin.base + P("/etag"))
    assert status == 200 and body == b"etagged"
    assert facts["from_cache"] and facts["revalidated"]
    assert origin.count(P("/etag")) == before + 2


def test_vary_keeps_one_response_per_header_value(path, client, origin):
    url = origin.base + "/vary?c=" + client.kind
    _, en1, _ = client.get(url, **{"Accept-Language": "en"})
    client.cache.flush()
    _, fr1, f_fr = client.get(url, **{"Accept-Language": "fr"})
    client.cache.flush()
    _, en2, f_en = client.get(url, **{"Accept-Language": "en"})
    assert en1.startswith(b"en:") and fr1.startswith(b"fr:")
    assert not f_fr["from_cache"] and f_en["from_cache"] and en2 == en1


def test_no_store_is_never_stored(path, client, origin):
    before = origin.count(P("/nostore"))
    client.get(origin.base + P("/nostore"))
    client.cache.flush()
    _, _, facts = client.get(origin.base + P("/nostore"))
    assert not facts["from_cache"]
    assert origin.count(P("/nostore")) == before + 2


def test_redirects_are_followed_and_cached_hop_by_hop(path, client, origin):
    before = origin.count(P("/moved"))
    status, body, _ = client.get(origin.base + P("/moved"))
    assert status == 200 and json.loads(body)["n"] >= 1
    client.cache.flush()
    status, _, facts = client.get(origin.base + P("/moved"))
    # The client follows the redirect; each hop is its own request to the cache: the 301 is
    # not among the default allowed codes, its target is served from the cache.
    assert status == 200 and facts["from_cache"]
    assert origin.count(P("/moved")) == before + 2
    assert origin.count("/fresh-target" + P("/moved")) == 1


def test_a_successful_post_invalidates_the_url(path, client, origin):
    url = origin.base + P("/fresh-post-")
    client.get(url)
    client.cache.flush()
    assert client.get(url)[2]["from_cache"]
    status, _, _ = client.request("POST", url, data=b"x=1")
    assert status == 201
    _, body, facts = client.get(url)
    assert not facts["from_cache"] and json.loads(body) == {"n": 2}


def test_stale_if_error_serves_the_stored_response_when_the_origin_fails(path, http_cache, origin):
    c = Client("requests", http_cache())
    c.get(origin.base + P("/flaky"))
    c.cache.flush()
    status, body, facts = c.get(origin.base + P("/flaky"))
    assert (status, body) == (200, b"good") and facts["stale"]


def test_large_bodies_stream_in_chunks_from_the_cache(path, http_cache, origin):
    cache = http_cache()
    session = dynacache.requests.CachedSession(cache)
    first = session.get(origin.base + P("/big"), stream=True)
    assert sum(len(c) for c in first.iter_content(65536)) == BIG
    cache.flush()
    second = session.get(origin.base + P("/big"), stream=True)
    assert second.from_cache
    chunks = list(second.iter_content(65536))
    assert len(chunks) > 1 and b"".join(chunks) == bytes(range(256)) * (BIG // 256)
    with httpx.Client(transport=dynacache.httpx.CacheTransport(cache=cache)) as hc:
        with hc.stream("GET", origin.base + P("/big")) as r:
            assert r.extensions["from_cache"]
            assert sum(len(c) for c in r.iter_bytes()) == BIG


def test_large_bodies_live_in_the_object_store(path, engine, http_cache, origin):
    if engine.name == "embedded":
        objects = {"object_store": "embedded"}
    elif os.environ.get("DYNACACHE_TEST_S3"):
        objects = {"object_store": f"s3://py-{uuid.uuid4().hex[:12]}/http",
                   "object_store_endpoint_url": os.environ["DYNACACHE_TEST_S3"]}
    else:
        pytest.skip("DYNACACHE_TEST_S3 is not set")
    # The body compresses to a few KB: a low threshold sends it to the object store.
    cache = http_cache(object_threshold=256, **objects)
    session = dynacache.requests.CachedSession(cache)
    url = origin.base + P("/big")
    assert len(session.get(url).content) == BIG
    cache.flush()
    if engine.file is not None:
        stored = engine.file.parent / "cache.db.objects" / engine.namespace
        assert len(list(stored.iterdir())) == 1, "the body is one object"
    again = session.get(url, stream=True)
    assert again.from_cache
    assert b"".join(again.iter_content(65536)) == bytes(range(256)) * (BIG // 256)
    assert origin.count(P("/big")) == 1
    # Another process without the object store: the entry cannot be read, and the origin answers.
    plain = dynacache.requests.CachedSession(http_cache())
    assert len(plain.get(url).content) == BIG
    assert cache.clear() >= 1
    if engine.file is not None:
        assert not stored.exists() or not list(stored.iterdir())


def test_the_origin_s_own_errors_reach_the_caller(path, http_cache):
    session = dynacache.requests.CachedSession(http_cache())
    with pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:9/unreachable", timeout=5)
    with httpx.Client(transport=dynacache.httpx.CacheTransport(cache=http_cache())) as hc:
        with pytest.raises(httpx.ConnectError):
            hc.get("http://127.0.0.1:9/unreachable")


def test_an_unreachable_table_is_a_typed_error_when_opened(path, monkeypatch):
    for name, value in DUMMY_AWS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(dynacache.Error):
        dynacache.HttpCache(endpoint_url="http://127.0.0.1:9", connect_timeout=0.5, operation_timeout=1)


def test_inspection_lists_shows_and_purges(path, http_cache, origin):
    cache = http_cache(tag_fields=["Surrogate-Key"])
    c = Client("requests", cache)
    for name in ("/fresh-i1", "/fresh-i2", "/etag"):
        c.get(origin.base + P(name))
    cache.flush()
    urls = sorted(e["url"] for e in cache.ls())
    assert urls == sorted(origin.base + P(p) for p in ("/fresh-i1", "/fresh-i2", "/etag"))
    assert [e["url"] for e in cache.ls(url="*/fresh-i*", expired=False)] and len(cache.ls(prefix=origin.base + "/fresh-i")) == 2
    shown = cache.show(origin.base + P("/fresh-i1"))
    assert shown["status"] == 200 and json.loads(shown["body"]) == {"n": 1}
    assert cache.purge(url="*/fresh-i1-*") == 1
    assert cache.purge(urls=[origin.base + P("/fresh-i2")]) == 1
    assert [e["url"] for e in cache.ls()] == [origin.base + P("/etag")]
    assert cache.stats()["stored"] >= 3
    assert cache.clear() == 1 and len(cache) == 0
    with pytest.raises(TypeError):
        cache.purge()


def test_threads_share_one_adapter(path, http_cache, origin):
    cache = http_cache()
    session = dynacache.requests.CachedSession(cache)
    url = origin.base + P("/fresh-threads")
    session.get(url)
    cache.flush()
    results = []

    def worker():
        for _ in range(10):
            r = session.get(url)
            results.append((r.status_code, r.from_cache, r.json()["n"]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 80 and set(results) == {(200, True, 1)}


def test_asyncio_requests_run_concurrently_without_holding_the_loop(path, http_cache, origin):
    cache = http_cache()
    transport = dynacache.httpx.AsyncCacheTransport(cache=cache)

    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        async with httpx.AsyncClient(transport=transport) as ac:
            rs = await asyncio.gather(*[ac.get(origin.base + P(f"/fresh-async{i % 4}")) for i in range(40)])
        done = True
        await t
        return rs, ticks

    rs, ticks = asyncio.run(main())
    assert all(r.status_code == 200 for r in rs)
    assert ticks > 0
    # One trip to the origin per URL: concurrent misses wait for the first (single flight).
    assert sum(origin.count(P(f"/fresh-async{i}")) for i in range(4)) == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_uses_the_cache(path, engine, http_cache, origin):
    cache = http_cache()
    session = dynacache.requests.CachedSession(cache)
    url = origin.base + P("/fresh-fork")
    session.get(url)
    cache.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = session.get(url).from_cache
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert session.get(url).from_cache


# --- Sharing with the CLI and `dynacache serve` ----------------------------------------------


def _cli_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in STEERING_ENV}
    env.update(DUMMY_AWS)
    env["HOME"] = str(tmp_path)
    return env


def _cli(cli_path, engine, tmp_path, *args, timeout=120):
    env = _cli_env(tmp_path)
    argv = [str(cli_path), *engine.cli_args, "--table", engine.table, "--namespace", engine.namespace, *args]
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=env)


def test_a_response_stored_from_python_is_a_hit_for_the_cli_and_the_reverse(cli_path, engine, http_cache, origin, tmp_path):
    cache = http_cache()
    session = dynacache.requests.CachedSession(cache)
    url = origin.base + P("/fresh-cli-a")
    first = session.get(url)
    cache.flush()
    r = _cli(cli_path, engine, tmp_path, "get", "--only-if-cached", url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == first.json()
    assert origin.count(P("/fresh-cli-a")) == 1

    url_b = origin.base + P("/fresh-cli-b")
    r = _cli(cli_path, engine, tmp_path, "get", url_b)
    assert r.returncode == 0, r.stderr
    got = session.get(url_b, headers={"Cache-Control": "only-if-cached"})
    assert got.status_code == 200 and got.from_cache and json.loads(r.stdout) == got.json()
    with httpx.Client(transport=dynacache.httpx.CacheTransport(cache=cache)) as hc:
        assert hc.get(url_b).extensions["from_cache"]
    assert origin.count(P("/fresh-cli-b")) == 1


@contextlib.contextmanager
def _serve(cli_path, engine, tmp_path, origin, *extra):
    """``dynacache serve`` in front of ``origin`` on the engine's table and namespace (shared
    mode, tags from ``Surrogate-Key``/``Cache-Tag``); yields ``get(path) -> (status, headers,
    body)`` sending the origin's own Host."""
    env = _cli_env(tmp_path)
    argv = [str(cli_path), *engine.cli_args, "--table", engine.table, "--namespace", engine.namespace,
            "--json", "serve", "--origin", origin.base, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *extra]
    proxy = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        listen = json.loads(proxy.stdout.readline())["listen"]
        host, port = listen.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)

        def get(path):
            conn.request("GET", path, headers={"Host": f"127.0.0.1:{origin.server_port}"})
            res = conn.getresponse()
            return res.status, res, res.read()

        yield get
        conn.close()
    finally:
        proxy.terminate()
        proxy.wait(30)


def test_a_response_stored_from_python_is_a_hit_for_dynacache_serve(cli_path, engine, http_cache, origin, tmp_path):
    cache = http_cache(shared=True)
    session = dynacache.requests.CachedSession(cache)
    url = origin.base + P("/fresh-serve")
    stored = session.get(url)
    cache.flush()
    with _serve(cli_path, engine, tmp_path, origin) as get:
        status, res, body = get(P("/fresh-serve"))
        assert status == 200 and json.loads(body) == stored.json()
        assert res.getheader("Cache-Status", "").startswith("dynacache; hit")
        assert origin.count(P("/fresh-serve")) == 1
        # And the reverse: what the proxy stores is a hit from Python.
        status, _, _ = get(P("/fresh-serve-b"))
        assert status == 200
    got = session.get(origin.base + P("/fresh-serve-b"), headers={"Cache-Control": "only-if-cached"})
    assert got.status_code == 200 and got.from_cache
    assert origin.count(P("/fresh-serve-b")) == 1


def test_a_tag_purge_from_any_side_reaches_every_side(cli_path, engine, http_cache, origin, tmp_path):
    """Tags are the engine's: the CLI purges what Python tagged, Python what the proxy tagged."""
    group = "group-" + _tag[0]
    cache = http_cache(shared=True, tag_fields=["Surrogate-Key"])
    session = dynacache.requests.CachedSession(cache)
    for name in ("/tagged-a", "/tagged-b", "/fresh-untagged"):
        session.get(origin.base + P(name))
    cache.flush()
    r = _cli(cli_path, engine, tmp_path, "purge", "--tag", group)
    assert r.returncode == 0, r.stderr

    def cached(name):
        return session.get(origin.base + P(name), headers={"Cache-Control": "only-if-cached"})

    assert [cached(n).status_code for n in ("/tagged-a", "/tagged-b")] == [504, 504]
    assert cached("/fresh-untagged").from_cache

    # No in-process tier in the proxy: with one, a purge from elsewhere reaches it within
    # --l1-ttl (1 s by default) instead of at once.
    with _serve(cli_path, engine, tmp_path, origin, "--memory-mib", "0") as get:
        assert get(P("/tagged-c"))[0] == 200
        status, res, _ = get(P("/tagged-c"))
        assert status == 200 and res.getheader("Cache-Status", "").startswith("dynacache; hit")
        assert cached("/tagged-c").from_cache
        assert cache.purge(tag=group) == 1
        assert cached("/tagged-c").status_code == 504
        status, res, _ = get(P("/tagged-c"))
        assert status == 200 and not res.getheader("Cache-Status", "").startswith("dynacache; hit")
    assert origin.count(P("/tagged-c")) == 2
