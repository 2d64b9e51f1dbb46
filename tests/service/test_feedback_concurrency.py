"""100 concurrent feedback posts on one prediction, against ``gga serve`` on SQLite and
PostgreSQL: none answered 5xx, and the one final state is the last accepted post."""

import asyncio
import random
from pathlib import Path

import httpx

from tests.service.support import LiveServer

MODEL = "fashion-mnist-cnn"
POSTS = 100


async def _post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=POSTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post(url_path, json=b) for url_path, b in bodies))


def test_concurrent_posts_on_one_id_end_in_the_last_accepted_one(
    database_url: str, model_repo: Path, fmnist_pngs: list[bytes], tmp_path: Path
) -> None:
    server = LiveServer(model_repo, database_url, tmp_path).start()
    try:
        r = httpx.post(
            f"{server.url}/v1/models/{MODEL}/predict",
            files={"file": ("x.png", fmnist_pngs[0], "image/png")},
            timeout=60,
        )
        prediction = r.json()["predictions"][0]
        path = f"/v1/predictions/{prediction['id']}/feedback"
        rng = random.Random(100)
        bodies = [
            (
                path,
                {"label": rng.randrange(10)}
                if rng.random() < 0.7
                else {"correct": rng.random() < 0.5},
            )
            for _ in range(POSTS)
        ]
        responses = asyncio.run(_post_all(server.url, bodies))
        codes = [r.status_code for r in responses]
        assert not [c for c in codes if c >= 500], codes
        accepted = [r.json() for r in responses if r.status_code == 200]
        assert len(accepted) == POSTS  # nothing limits these callers: every post is accepted
        last = max(accepted, key=lambda f: f["revision"])
        stored = httpx.get(f"{server.url}/v1/predictions/{prediction['id']}").json()["feedback"]
        assert (stored["correct"], stored["label"]) == (last["correct"], last["label"])
        history = httpx.get(f"{server.url}{path}").json()["feedback"]
        assert len(history) == POSTS
        assert history[-1]["revision"] == last["revision"]
        assert sorted(h["revision"] for h in history) == sorted(f["revision"] for f in accepted)
    finally:
        assert server.stop() == 0
