"""Adaptive plain views under uvicorn: a promoted view keeps answering while others block.

uvicorn serves ``tests/support/plain_views_server_app.py`` in a subprocess.
``/quick`` is promoted after its probation and then runs on the event loop
thread (uvicorn's main thread); ``/sleepy`` blocks its pool thread until
the test releases it.  With several ``/sleepy`` calls blocked, ``/quick``
still answers every request, from the loop thread: the pool's blocked
threads never stall it.  Ordering and counts only, no timings.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from aiopyramid_ng.adaptive import PROMOTE_AFTER
from tests.support.servers import PATIENCE
from tests.support.websocket_servers import running

APP = "tests.support.plain_views_server_app:app"
SLEEPERS = 3
QUICK_CALLS = 30


def test_a_promoted_view_answers_while_plain_views_block_in_the_pool(tmp_path: Path) -> None:
    with running("uvicorn", tmp_path, APP) as server:
        with httpx.Client(base_url=server.url, timeout=PATIENCE) as client:
            threads = []
            for n in range(10 * PROMOTE_AFTER):
                threads.append(client.get("/quick", params={"n": n}).json()["thread"])
                if threads[-1] == "MainThread":
                    break
            # A view that sleeps 20 ms on its first call stays in the pool for good.
            slept_in = [client.get("/sleepy", params={"s": 0.02}).json()["thread"] for _ in "abc"]
        assert all(name.startswith("aiopyramid_ng") for name in threads[:PROMOTE_AFTER])
        assert threads[-1] == "MainThread"
        assert all(name.startswith("aiopyramid_ng") for name in slept_in)
        server.wait_for_log("function tests.support.plain_views_server_app.quick ran 16 times")
        server.wait_for_log("function tests.support.plain_views_server_app.sleepy waited")

        async def scenario() -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=PATIENCE, limits=limits
            ) as client:
                finished: list[str] = []

                async def get(path: str, **params: Any) -> dict[str, Any]:
                    response = await client.get(path, params=params)
                    response.raise_for_status()
                    finished.append(path)
                    body: dict[str, Any] = response.json()
                    return body

                sleepers = [asyncio.create_task(get("/sleepy")) for _ in range(SLEEPERS)]

                async def all_waiting() -> bool:
                    waiting: int = (await get("/waiting"))["waiting"]
                    return waiting == SLEEPERS

                while not await all_waiting():
                    await asyncio.sleep(0.02)
                quick = [await get("/quick", n=n) for n in range(QUICK_CALLS)]
                still_waiting = (await get("/waiting"))["waiting"]
                await get("/release")
                slept = await asyncio.gather(*sleepers)
                assert still_waiting == SLEEPERS
                return finished, quick, slept

        finished, quick, slept = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
        # Every /quick answered while all the sleepers still blocked their threads.
        answered = [path for path in finished if path in ("/quick", "/sleepy")]
        assert answered == ["/quick"] * QUICK_CALLS + ["/sleepy"] * SLEEPERS
        assert [body["n"] for body in quick] == [str(n) for n in range(QUICK_CALLS)]
        assert {body["thread"] for body in quick} == {"MainThread"}
        assert all(body["thread"].startswith("aiopyramid_ng") for body in slept)
        assert len({body["thread"] for body in slept}) == SLEEPERS
        log = server.log_text()
        assert "WARNING" not in log, log
