"""dynacache.aiohttp (DynamoDBBackend, DynamoDbCache) under aiohttp-client-cache's own
CachedSession, on both engines, against a local aiohttp origin."""

import asyncio
import os
import uuid

import pytest

pytest.importorskip("aiohttp_client_cache")

from aiohttp import web  # noqa: E402
from aiohttp_client_cache import CachedSession  # noqa: E402

from dynacache.aiohttp import DynamoDBBackend, DynamoDbCache  # noqa: E402

LOCAL = os.environ.get("DYNACACHE_TEST_DYNAMODB_LOCAL")


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
        "create_if_not_exists": True,
    }


async def serve(hits):
    async def page(request):
        hits[request.path] = hits.get(request.path, 0) + 1
        size = 2 * 1024 * 1024 if request.path.startswith("/big") else 20 * 1024
        return web.Response(body=os.urandom(size // 2).hex().encode(), headers={"Cache-Control": "max-age=600"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def test_hits_small_and_large_bodies_and_listing(engine):
    table = f"ac_{uuid.uuid4().hex[:12]}"

    async def main():
        hits = {}
        runner, base = await serve(hits)
        try:
            backend = DynamoDBBackend(table, **engine)
            async with CachedSession(cache=backend) as s:
                for path in ("/small", "/big"):
                    first = await (await s.get(base + path)).read()
                    again = await s.get(base + path)
                    assert again.from_cache
                    assert await again.read() == first
                assert hits == {"/small": 1, "/big": 1}
                assert await backend.responses.size() == 2
                assert len([k async for k in backend.responses.keys()]) == 2
                assert len([v async for v in backend.responses.values()]) == 2
            # A second backend (another process) on the same table sees the entries.
            other = DynamoDBBackend(table, **engine)
            async with CachedSession(cache=other) as s:
                assert (await s.get(base + "/small")).from_cache
                await other.clear()
                assert await other.responses.size() == 0
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_64_concurrent_hits_run_on_one_loop(engine):
    table = f"ac_{uuid.uuid4().hex[:12]}"

    async def main():
        hits = {}
        runner, base = await serve(hits)
        try:
            async with CachedSession(cache=DynamoDBBackend(table, **engine)) as s:
                await (await s.get(base + "/hot")).read()
                ticks = 0

                async def ticker():
                    nonlocal ticks
                    while True:
                        ticks += 1
                        await asyncio.sleep(0)

                t = asyncio.create_task(ticker())
                answers = await asyncio.gather(*(s.get(base + "/hot") for _ in range(64)))
                t.cancel()
                assert all(a.from_cache for a in answers)
                assert hits["/hot"] == 1
                assert ticks > 64  # the loop kept running while storage calls were in flight
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_storage_interface(engine):
    table = f"ac_{uuid.uuid4().hex[:12]}"

    async def main():
        c = DynamoDbCache(table, "ns", create_if_not_exists=True, **{k: v for k, v in engine.items() if k != "create_if_not_exists"})
        await c.write("a", "value-a")
        await c.write("b", "value-b")
        assert await c.read("a") == "value-a"
        assert await c.read("missing") is None
        assert await c.contains("a") and not await c.contains("missing")
        assert sorted([k async for k in c.keys()]) == ["a", "b"]
        await c.delete("a")
        await c.delete("never-there")
        await c.bulk_delete({"b", "x"})
        assert await c.size() == 0
        await c.close()

    asyncio.run(main())
