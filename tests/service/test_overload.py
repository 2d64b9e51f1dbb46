"""A small version of ``gga bench overload`` in CI: 64 clients on a 16-image queue, v1 and v2.

The full run (256 and 512 clients, 20 s each) is a benchmark command whose figures are in
docs/performance.md; here the floors that do not depend on the machine's speed are asserted:
only 200/429/503, ``Retry-After`` on every 503, no dropped connection, every health probe answered.
"""

from pathlib import Path

import pytest

from gga_lab.bench.overload import overload_floors, run_level
from tests.service.support import LiveServer

MODEL = "fashion-mnist-cnn"


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("overload")
    srv = LiveServer(model_repo, f"sqlite:///{work / 'gga.db'}", work).start()
    yield srv
    assert srv.stop() == 0


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_overload_answers_only_200_429_503_and_health_keeps_answering(
    server: LiveServer, fmnist_test, protocol: str
) -> None:
    x = fmnist_test.float()[:32].numpy()
    result = run_level(server.url, MODEL, x, clients=64, protocol=protocol, seconds=5.0)
    floors = overload_floors(result)
    assert result.statuses.get("200", 0) > 0 and result.statuses.get("503", 0) > 0, result
    assert floors["only_200_429_503"], result.statuses
    assert floors["retry_after_on_every_503"], result
    assert floors["no_dropped_connection"], result
    assert result.health_probes > 0 and result.health_failures == 0, result


def test_admission_control_refuses_beyond_what_the_server_answers_in_time() -> None:
    import asyncio

    from service.protocol.middleware import AdmissionMiddleware

    refused: list[str] = []
    gate = asyncio.Event()

    async def app(scope, receive, send) -> None:  # a prediction that waits for the gate
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = AdmissionMiddleware(
        app, latency_budget_s=1.0, floor=2, models={"m", "n"}, on_refuse=refused.append
    )

    async def call(path: str, method: str = "POST") -> tuple[int, dict[bytes, bytes]]:
        sent: list[dict] = []
        body = iter([{"type": "http.request", "body": b"x", "more_body": True},
                     {"type": "http.request", "body": b"y", "more_body": False}])  # fmt: skip

        async def receive() -> dict:
            return next(body)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path}
        await middleware(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"])

    async def main() -> list[tuple[int, dict]]:
        # Completions measure a rate (here each closes a zero-length window).
        gate.set()
        await call("/v1/models/m/predict")
        control = middleware.controls["m"]
        control.window_s = 0.0
        await call("/v1/models/m/predict")
        assert control.rate is not None and control.rate > 0
        gate.clear()
        control.rate = 3.0  # as if the server answered 3 of m's requests a second: 3 fit in 1 s
        limit = control.limit
        assert limit == 3
        waiting = [asyncio.ensure_future(call("/v1/models/m/predict")) for _ in range(limit)]
        await asyncio.sleep(0.01)
        over = await call("/v2/models/m/infer")
        # Never refused here: another model (its own control), health, an unknown model (404s).
        others = [
            asyncio.ensure_future(call("/v1/models/n/predict")),
            asyncio.ensure_future(call("/v2/health/ready", "GET")),
            asyncio.ensure_future(call("/v1/models/unknown/predict")),
        ]
        await asyncio.sleep(0.01)
        gate.set()
        return [over, *(await asyncio.gather(*waiting)), *(await asyncio.gather(*others))]

    answers = asyncio.run(main())
    status, headers = answers[0]
    assert status == 503 and headers[b"retry-after"] == b"1" and refused == ["m"]
    assert {code for code, _ in answers[1:]} == {200}
    assert set(middleware.controls) == {"m", "n"}
