"""Start-up warm-up: ready after one input, the buckets measured in the background or read from
the tuning cache, and /v2/health/ready saying what is still being measured."""

import json

import torch
from fastapi.testclient import TestClient

from detectors.pipeline import GGAPipeline
from models.repository import ModelRepository
from service.app import create_app
from service.warmup import EngineTuning
from tests.service.conftest import service_settings


def test_default_warmup_tunes_every_bucket_up_to_the_largest_batch(model_repo, tmp_path):
    settings = service_settings(
        model_repo, tmp_path / "w.db", warmup_batch_sizes=[], max_batch_size=8
    )
    assert settings.warmup_batch_sizes == []
    app = create_app(settings)
    with TestClient(app) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "tuning": {}}
        (name,) = app.state.registry.names()
        engine = app.state.registry.get(name).pipeline.engine
        for batch in (1, 2, 3, 5, 8):
            assert engine.tuning_timings(batch), f"batch {batch} was not tuned at start-up"
        assert not engine.tuning_timings(9)  # beyond max_batch_size: never formed, never tuned


def test_explicit_warmup_sizes_are_kept(model_repo, tmp_path):
    settings = service_settings(model_repo, tmp_path / "w.db", warmup_batch_sizes=[1])
    app = create_app(settings)
    with TestClient(app):
        (name,) = app.state.registry.names()
        engine = app.state.registry.get(name).pipeline.engine
        assert engine.tuning_timings(1) and not engine.tuning_timings(8)


def _tuning(model_repo, cache_dir) -> tuple[EngineTuning, GGAPipeline]:
    loaded = ModelRepository(model_repo).load("fashion-mnist-cnn")
    pipeline = GGAPipeline(loaded.module, None)
    tuning = EngineTuning(
        "fashion-mnist-cnn",
        pipeline,
        loaded.card.weights_sha256,
        loaded.card.input_shape,
        (1, 2, 4, 8),
        cache_dir,
        background=True,
    )
    return tuning, pipeline


def test_ready_at_once_with_the_rest_measured_behind_then_read_from_the_cache(model_repo, tmp_path):
    tuning, pipeline = _tuning(model_repo, tmp_path / "cache")
    engine = pipeline.engine
    # Hold the measuring lock, as a long measurement would: the model is ready meanwhile and
    # serves every batch size with the default strategy, without waiting.
    with engine._tuner._measuring:
        in_use = tuning.start()
        assert tuning.pending == [1, 2, 4, 8] and tuning.from_cache == []
        assert in_use == {1: "replicate", 2: "batched", 4: "batched", 8: "batched"}
        out = engine(torch.rand(5, 1, 28, 28))
        assert out.strategy == "batched" and not engine.tuning_timings(5)
    assert tuning.wait(timeout_s=120)
    assert all(engine.tuning_timings(b) for b in (1, 2, 4, 8))
    (cache_file,) = (tmp_path / "cache").glob("*.json")
    cached = json.loads(cache_file.read_text())["buckets"]
    assert set(cached) == {"1", "2", "4", "8"}

    # A restart reads every choice from the cache: nothing left to measure.
    again, pipeline_again = _tuning(model_repo, tmp_path / "cache")
    assert again.cache_key == tuning.cache_key
    chosen = again.start()
    assert again.pending == [] and again.from_cache == [1, 2, 4, 8]
    assert chosen == {int(b): e["choice"] for b, e in cached.items()}
    assert pipeline_again.engine.tuning_timings(4) == cached["4"]["timings"]


def test_the_cache_key_changes_with_weights_options_and_budget(model_repo, tmp_path):
    tuning, _ = _tuning(model_repo, tmp_path)
    key = tuning.cache_key
    engine = tuning.engine
    shape, device = tuning.input_shape, engine.device
    options = engine.options.to_dict()
    others = [
        ("0" * 64, shape, options, engine.memory_budget),
        (None, (1, 32, 32), options, engine.memory_budget),
        (None, shape, {**options, "top_n": 3}, engine.memory_budget),
        (None, shape, options, engine.memory_budget // 2),
    ]
    card = ModelRepository(model_repo).card("fashion-mnist-cnn")
    for weights, input_shape, opts, budget in others:
        other = tuning.cache.key(weights or card.weights_sha256, input_shape, opts, device, budget)
        assert other != key


def test_an_unusable_cache_file_is_ignored(model_repo, tmp_path):
    tuning, _ = _tuning(model_repo, tmp_path)
    (tmp_path / f"{tuning.cache_key}.json").write_text("{not json")
    tuning.background = False
    tuning.start()
    assert tuning.from_cache == [] and tuning.pending == []
    assert json.loads((tmp_path / f"{tuning.cache_key}.json").read_text())["buckets"]


def test_the_server_lists_what_it_is_still_tuning_and_keeps_serving(
    model_repo, tmp_path, fmnist_pngs
):
    settings = service_settings(
        model_repo,
        tmp_path / "w.db",
        warmup_batch_sizes=[],
        max_batch_size=8,
        background_tuning=True,
        tuning_cache_dir=tmp_path / "cache",
    )
    app = create_app(settings)
    with TestClient(app) as client:
        (name,) = app.state.registry.names()
        model = app.state.registry.get(name)
        first = client.get("/v2/health/ready")
        assert first.status_code == 200 and first.json()["ready"] is True
        # Whatever is still pending is listed under the model (the measurement of a small
        # model may already be over).
        assert set(first.json()["tuning"]) <= {name}
        assert set(first.json()["tuning"].get(name, [])) <= {1, 2, 4, 8}
        files = [("file", ("x.png", fmnist_pngs[0], "image/png"))]
        assert client.post(f"/v1/models/{name}/predict", files=files).status_code == 200
        assert model.tuning.wait(timeout_s=120)
        assert client.get("/v2/health/ready").json() == {"ready": True, "tuning": {}}
    assert list((tmp_path / "cache").glob("*.json"))


def test_stopping_cancels_the_measurement_before_its_next_run(model_repo, tmp_path):
    tuning, pipeline = _tuning(model_repo, tmp_path / "cache")
    engine = pipeline.engine
    with engine._tuner._measuring:  # the thread waits here, as behind a long measurement
        tuning.start()
        tuning.stop(timeout_s=0.1)  # a server shutting down
    tuning.wait(timeout_s=60)
    # The thread met the stop before its first run: nothing measured, nothing cached, and
    # the engine keeps serving with the default strategies.
    assert tuning.pending == [1, 2, 4, 8]
    assert not any(engine.tuning_timings(b) for b in (1, 2, 4, 8))
    assert not list((tmp_path / "cache").glob("*.json"))
    assert engine(torch.rand(3, 1, 28, 28)).strategy == "batched"
