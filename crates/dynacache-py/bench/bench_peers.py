"""dynacache's drop-ins against the peers' own DynamoDB backends, in one run, on the same
DynamoDB Local and the same local origin. Run by scripts/bench-python (never by CI).

Each figure is a median of several rounds; CPU is this process's CPU time (every thread,
the Rust core's included) per operation.
"""

import asyncio
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENDPOINT = os.environ["DYNACACHE_BENCH_ENDPOINT"]
AWS = {
    "endpoint_url": ENDPOINT,
    "region_name": "us-east-1",
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}
ROUNDS = int(os.environ.get("DYNACACHE_BENCH_ROUNDS", "3"))
results = {}


def record(name, **figures):
    results[name] = figures
    print(f"{name:58s} " + "  ".join(f"{k}={v:.4g}" for k, v in figures.items()), flush=True)


def measure(fn, n):
    """(wall seconds, cpu seconds) for n calls of fn, median of ROUNDS rounds."""
    walls, cpus = [], []
    for _ in range(ROUNDS):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def latencies(fn, n):
    lat = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / n
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], cpu


def threaded_ops(fn, threads, per_thread):
    def work(_):
        for _ in range(per_thread):
            fn()

    best = 0.0
    for _ in range(ROUNDS):
        with ThreadPoolExecutor(threads) as pool:
            t0 = time.perf_counter()
            list(pool.map(work, range(threads)))
            best = max(best, threads * per_thread / (time.perf_counter() - t0))
    return best


# ----- cachelib ------------------------------------------------------------------------------


def bench_cachelib():
    import cachelib

    import dynacache.cachelib

    value = os.urandom(512).hex()  # 1 KB
    for name, cls, extra in (
        ("cachelib.DynamoDbCache", cachelib.DynamoDbCache, {}),
        ("dynacache.cachelib.DynamoDbCache", dynacache.cachelib.DynamoDbCache, {}),
    ):
        cache = cls(table_name=f"bench-cl-{uuid.uuid4().hex[:8]}", **AWS, **extra)
        cache.set("k", value)
        assert cache.get("k") == value
        n = 300
        wall, cpu = measure(lambda: cache.get("k"), n)
        record(f"cachelib get 1 KB, 1 thread: {name}", ops_s=n / wall, cpu_us=cpu / n * 1e6)
        wall, cpu = measure(lambda: cache.set("k", value), n)
        record(f"cachelib set 1 KB, 1 thread: {name}", ops_s=n / wall, cpu_us=cpu / n * 1e6)
        record(f"cachelib get 1 KB, 16 threads: {name}", ops_s=threaded_ops(lambda: cache.get("k"), 16, 60))
        big = os.urandom(10 * 1024 * 1024)
        ok = cache.set("big", big) and cache.get("big") == big
        record(f"cachelib 10 MB value stored and read back: {name}", ok=float(bool(ok)))


# ----- requests-cache ------------------------------------------------------------------------


class Origin(ThreadingHTTPServer):
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        size = 10 * 1024 * 1024 if self.path.startswith("/big") else 20 * 1024
        body = b"x" * size
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def origin():
    server = Origin(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def bench_requests_cache(base):
    import requests_cache
    from requests_cache.backends.dynamodb import DynamoDbCache as PeerCache

    import dynacache.requests_cache

    table = f"bench-rc-{uuid.uuid4().hex[:8]}"
    backends = (
        ("requests-cache DynamoDbCache", lambda: PeerCache(table + "-peer", **AWS)),
        ("dynacache.requests_cache", lambda: dynacache.requests_cache.DynamoDbCache(table, **AWS)),
        (
            "dynacache.requests_cache + in-process tier",
            lambda: dynacache.requests_cache.DynamoDbCache(table + "-tier", in_process_bytes=64 << 20, **AWS),
        ),
    )
    for name, make in backends:
        s = requests_cache.CachedSession(backend=make())
        url = base + "/r20k"
        s.get(url)
        assert s.get(url).from_cache
        p50, p99, cpu = latencies(lambda: s.get(url), 300)
        record(f"requests-cache 20 KB hit: {name}", p50_ms=p50 * 1e3, p99_ms=p99 * 1e3, cpu_ms=cpu * 1e3)
        try:
            s.get(base + "/big")
            ok = s.get(base + "/big").from_cache
        except Exception as e:  # the peer's backend fails above 400 KB
            print(f"  ({name}: 10 MB response: {type(e).__name__}: {str(e)[:100]})")
            ok = False
        record(f"requests-cache 10 MB response cached: {name}", ok=float(bool(ok)))


# ----- aiohttp-client-cache ------------------------------------------------------------------


def bench_aiohttp(base):
    from aiohttp_client_cache import CachedSession
    from aiohttp_client_cache.backends.dynamodb import DynamoDBBackend as PeerBackend

    import dynacache.aiohttp

    table = f"bench-ac-{uuid.uuid4().hex[:8]}"

    async def run(name, backend):
        async with CachedSession(cache=backend) as s:
            url = base + "/a20k"
            await (await s.get(url)).read()
            assert (await s.get(url)).from_cache
            best = 0.0
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                for _ in range(4):
                    answers = await asyncio.gather(*(s.get(url) for _ in range(64)))
                    for a in answers:
                        await a.read()
                best = max(best, 256 / (time.perf_counter() - t0))
            record(f"aiohttp-client-cache hits/s, 64 concurrent: {name}", hits_s=best)
            try:
                await (await s.get(base + "/big")).read()
                ok = (await s.get(base + "/big")).from_cache
            except Exception as e:
                print(f"  ({name}: 10 MB response: {type(e).__name__}: {str(e)[:100]})")
                ok = False
            record(f"aiohttp-client-cache 10 MB response cached: {name}", ok=float(bool(ok)))

    asyncio.run(run("aiohttp-client-cache DynamoDBBackend", PeerBackend(table + "-peer", create_if_not_exists=True, **AWS)))
    asyncio.run(run("dynacache.aiohttp", dynacache.aiohttp.DynamoDBBackend(table, create_if_not_exists=True, **AWS)))


# ----- issue 18: the engine under requests and httpx ---------------------------------------


def bench_adapters(base):
    import hishel
    import httpx
    import requests_cache
    from hishel.httpx import AsyncCacheTransport as HishelTransport
    from requests_cache.backends.dynamodb import DynamoDbCache as PeerCache

    import dynacache
    import dynacache.httpx
    import dynacache.requests
    import dynacache.requests_cache

    table = f"bench-ad-{uuid.uuid4().hex[:8]}"
    where = {"endpoint_url": ENDPOINT, "table": table}
    # The embedded engine keeps its table in a local SQLite file, as hishel's storage does.
    embedded = {"embedded_file": f"/tmp/{table}-embedded.db", "table": table}
    url = base + "/r20k"
    sessions = (
        ("requests-cache CachedSession, its DynamoDbCache", lambda: requests_cache.CachedSession(backend=PeerCache(table + "-peer", **AWS))),
        ("requests-cache CachedSession, dynacache drop-in", lambda: requests_cache.CachedSession(backend=dynacache.requests_cache.DynamoDbCache(table + "-dropin", **AWS))),
        ("dynacache.requests.CachedSession", lambda: dynacache.requests.CachedSession(namespace="plain", **where)),
        ("dynacache.requests.CachedSession + in-process tier", lambda: dynacache.requests.CachedSession(namespace="tier", in_process_bytes=64 << 20, **where)),
        ("dynacache.requests.CachedSession (embedded engine)", lambda: dynacache.requests.CachedSession(namespace="plain", **embedded)),
    )
    for name, make in sessions:
        s = make()
        s.get(url)
        time.sleep(0.2)
        assert s.get(url).from_cache
        p50, p99, cpu = latencies(lambda: s.get(url), 300)
        record(f"20 KB hit, requests: {name}", p50_ms=p50 * 1e3, p99_ms=p99 * 1e3, cpu_ms=cpu * 1e3)

    async def run(name, transport, hit):
        async with httpx.AsyncClient(transport=transport) as c:
            await c.get(url)
            await asyncio.sleep(0.2)
            assert hit(await c.get(url)), name
            lat = []
            c0 = time.process_time()
            for _ in range(300):
                t0 = time.perf_counter()
                r = await c.get(url)
                await r.aread()
                lat.append(time.perf_counter() - t0)
            cpu = (time.process_time() - c0) / 300
            lat.sort()
            record(f"20 KB hit, httpx async: {name}", p50_ms=lat[150] * 1e3, p99_ms=lat[297] * 1e3, cpu_ms=cpu * 1e3)

    db = f"/tmp/{table}-hishel.db"
    asyncio.run(run(
        "hishel AsyncCacheTransport, AsyncSqliteStorage (rfc=True)",
        HishelTransport(httpx.AsyncHTTPTransport(), storage=hishel.AsyncSqliteStorage(database_path=db), rfc=True),
        lambda r: bool((r.extensions.get("caching") or {}).get("from_cache")),
    ))
    asyncio.run(run(
        "dynacache.httpx.AsyncCacheTransport (DynamoDB Local)",
        dynacache.httpx.AsyncCacheTransport(namespace="httpx", **where),
        lambda r: r.extensions["from_cache"],
    ))
    asyncio.run(run(
        "dynacache.httpx.AsyncCacheTransport (embedded engine)",
        dynacache.httpx.AsyncCacheTransport(namespace="httpx", **embedded),
        lambda r: r.extensions["from_cache"],
    ))
    asyncio.run(run(
        "dynacache.httpx.AsyncCacheTransport + in-process tier",
        dynacache.httpx.AsyncCacheTransport(namespace="httpx-tier", in_process_bytes=64 << 20, **where),
        lambda r: r.extensions["from_cache"],
    ))


if __name__ == "__main__":
    which = sys.argv[1:] or ["cachelib", "requests-cache", "aiohttp", "adapters"]
    base = origin()
    if "cachelib" in which:
        bench_cachelib()
    if "requests-cache" in which:
        bench_requests_cache(base)
    if "aiohttp" in which:
        bench_aiohttp(base)
    if "adapters" in which:
        bench_adapters(base)
    out = os.environ.get("DYNACACHE_BENCH_JSON")
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
