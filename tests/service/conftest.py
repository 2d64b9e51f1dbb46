"""Fixtures of the service tests: store backends, a tiny served model folder, real images."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get(
    "GGA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards.

    Parallel test runs (CI shards, engineers) each get their own schema, so they never collide.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as err:  # any failure to connect means "no PostgreSQL here"
        engine.dispose()
        reason = (
            f"no PostgreSQL answers at {PG_URL} ({type(err).__name__}); set GGA_TEST_POSTGRES_URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    schema = f"gga_test_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def store_url(backend: str, folder: Path) -> Iterator[str]:
    """A store URL of ``backend``: a SQLite file in ``folder``, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'gga.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file and a PostgreSQL schema."""
    yield from store_url(request.param, tmp_path)


@pytest.fixture
def db(database_url: str):
    """A migrated store on each backend of ``database_url``."""
    from service.store import Database

    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL schema (for behaviour only PostgreSQL shows, such as column limits)."""
    yield from _postgres_schema_url()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded: the CI box has two cores shared by parallel jobs, where
    torch's default thread pool oversubscribes and runs many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A model repository holding one small trained ``fashion-mnist-cnn`` with its detector."""
    from tests.service.support import make_model_folder

    root = tmp_path_factory.mktemp("repo")
    make_model_folder(root, shared_data_dir)
    return root


@pytest.fixture(scope="session")
def fmnist_test(shared_data_dir: Path):
    """The first 64 Fashion-MNIST test images (a ``Dataset``)."""
    from models.data import load_dataset

    return load_dataset("fashion-mnist", "test", data_dir=shared_data_dir, limit=64)


@pytest.fixture(scope="session")
def fmnist_pngs(fmnist_test) -> list[bytes]:
    """The same images as PNG files."""
    from models.imaging import encode_png

    x = fmnist_test.float()
    return [encode_png(img) for img in x]


def service_settings(model_repo: Path, db_path: Path, **overrides):
    """Settings for a test server: small warm-up, small batches, no .env."""
    from service.settings import Settings

    values = {
        "repo": model_repo,
        "database_url": f"sqlite:///{db_path}",
        "warmup_batch_sizes": [1, 8],
        "max_batch_size": 8,
        "max_latency_ms": 5.0,
        "queue_size": 64,
        "max_images_per_request": 16,
        "rate_limit": 0.0,
        "torch_threads": 1,  # as _one_torch_thread: the app would otherwise take every CPU
        # Each test measures for itself, before ready: no cache shared between tests.
        "tuning_cache_dir": None,
        "background_tuning": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def colour_repo(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A model repository holding one small trained CIFAR-10 colour model with its detector."""
    from tests.service.support import make_colour_model_folder

    root = tmp_path_factory.mktemp("colour-repo")
    make_colour_model_folder(root, shared_data_dir)
    return root


@pytest.fixture(scope="session")
def cifar_test(shared_data_dir: Path):
    """64 CIFAR-10 test images (a ``Dataset``)."""
    from models.data import load_dataset

    return load_dataset("cifar10", "test", data_dir=shared_data_dir, limit=64)
