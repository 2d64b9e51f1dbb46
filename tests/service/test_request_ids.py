"""Client-chosen request ids: refused at the edge when too long, and one bad row sinks no batch.

On PostgreSQL ``request_id`` is ``VARCHAR(64)``: a longer id used to fail the whole micro-batch's
transaction, answering 500 to every client batched with it (SQLite does not enforce lengths).
"""

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.repository import ModelRepository
from service.app import create_app
from service.errors import StoreRejected
from service.metrics import ServiceMetrics
from service.model import BatchingConfig, RequestContext, ServedModel
from service.settings import Settings
from service.store import Database
from service.store import repository as repo

MODEL = "fashion-mnist-cnn"
TENSOR = {"tensor": [[0.5] * 28] * 28}


@pytest.fixture
def client(model_repo: Path, database_url: str):
    settings = Settings(
        _env_file=None,
        repo=model_repo,
        database_url=database_url,
        warmup_batch_sizes=[1],
        max_batch_size=8,
        rate_limit=0.0,
        torch_threads=1,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_long_request_ids_are_refused_at_the_edge(client: TestClient) -> None:
    long_id = "x" * 65
    r = client.post(f"/v1/models/{MODEL}/predict", json=TENSOR, headers={"X-Request-ID": long_id})
    assert r.status_code == 422, r.text
    assert "at most 64" in r.json()["error"]["message"]
    body = {"id": long_id, "inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                       "data": [0.5] * 784}]}  # fmt: skip
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 422 and "at most 64" in r.json()["error"], r.text
    # 64 characters are fine, and stored as sent.
    ok = client.post(f"/v1/models/{MODEL}/predict", json=TENSOR, headers={"X-Request-ID": "y" * 64})
    assert ok.status_code == 200, ok.text
    stored = client.get(f"/v1/predictions/{ok.json()['predictions'][0]['id']}").json()
    assert stored["request_id"] == "y" * 64
    body["id"] = "z" * 64
    assert client.post(f"/v2/models/{MODEL}/infer", json=body).status_code == 200
    bad = client.post(f"/v1/models/{MODEL}/predict", json=TENSOR, headers={"X-Request-ID": "a\tb"})
    assert bad.status_code in (400, 422)


def test_one_rejected_row_fails_only_its_own_request(
    model_repo: Path, postgres_url: str, fmnist_test
) -> None:
    db = Database(postgres_url)
    db.upgrade()
    model = ServedModel(
        MODEL,
        ModelRepository(model_repo),
        db,
        ServiceMetrics(),
        # A long wait to fill: the five requests below form one micro-batch.
        batching=BatchingConfig(max_batch_size=8, max_latency_s=0.5, queue_size=16),
        warmup_batch_sizes=[1, 8],
    )
    model.load()
    x = fmnist_test.float()[:5]
    # The edge refuses such ids; a row the store refuses for any reason must behave alike.
    ids = ["ok-0", "ok-1", "r" * 100, "ok-3", "ok-4"]

    async def main() -> list:
        return await asyncio.gather(
            *(
                model.predict(x[i : i + 1], RequestContext(request_id=ids[i]), 30.0)
                for i in range(5)
            ),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(main())
    finally:
        model.stop()
    assert isinstance(results[2], StoreRejected), results[2]
    for i in (0, 1, 3, 4):
        assert not isinstance(results[i], BaseException), results[i]
        stored = repo.get_prediction(db, results[i].ids[0], None)
        assert stored["request_id"] == ids[i]
    rows, _ = repo.list_predictions(db, None)
    assert len(rows) == 4
    db.dispose()
