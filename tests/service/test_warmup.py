"""Start-up warm-up: every batch-size bucket the batcher can form is tuned before ready."""

from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import service_settings


def test_default_warmup_tunes_every_bucket_up_to_the_largest_batch(model_repo, tmp_path):
    settings = service_settings(
        model_repo, tmp_path / "w.db", warmup_batch_sizes=[], max_batch_size=8
    )
    assert settings.warmup_batch_sizes == []
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/v2/health/ready").status_code == 200
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
