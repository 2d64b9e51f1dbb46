"""The service's one configuration object, read from ``GGA_*`` variables and an optional ``.env``.

Built by :func:`get_settings` (never at import time) and passed to ``create_app(settings)``;
library code below ``service`` takes plain arguments instead. Every field is documented in
``docs/configuration.md``.
"""

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from detectors.tuning_cache import default_directory as default_tuning_directory
from service.access import parse_static_keys

DEFAULT_MODEL = "fashion-mnist-cnn"


def _split_csv(value: object) -> object:
    """Accept ``a,b`` from the environment as well as a JSON/Python list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything ``gga serve`` can be told; see docs/configuration.md for the table."""

    model_config = SettingsConfigDict(
        env_prefix="GGA_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Some values are secrets (API keys, the pepper, a password in the database URL): an
        # error names the variable and what is wrong, never the value given.
        hide_input_in_errors=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    repo: Path | None = None
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    default_model: str = DEFAULT_MODEL
    database_url: str = "sqlite:///gga.db"
    run_migrations: bool = True
    retention_days: float = Field(0.0, ge=0.0)
    prune_interval_s: float = Field(3600.0, gt=0.0)
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_latency_ms: float = Field(5.0, ge=0.0, le=10_000.0)
    queue_size: int = Field(256, ge=1)
    queue_budget_s: float = Field(1.0, ge=0.0)
    pad_batches: bool = False
    request_timeout_s: float = Field(30.0, gt=0.0)
    shutdown_timeout_s: float = Field(20.0, gt=0.0)
    keep_alive_s: float = Field(75.0, gt=0.0)
    # Empty: no proxy is trusted, the peer's address is the caller (configure proxies explicitly).
    forwarded_allow_ips: str = ""
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_images_per_request: int = Field(64, ge=1)
    # 1 MP: ample for models whose inputs are 28x28 or 32x32, and 64 of them still decode in
    # well under a second; 4096x4096 let one request ask for a gigapixel of decoding.
    max_pixels: int = Field(1024 * 1024, ge=1)
    decode_workers: int = Field(2, ge=1, le=64)
    api_keys_required: bool = False
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long a verified key, and whether keys are on at all, is believed without asking the
    # store again: a revoked key is refused within this many seconds.
    auth_cache_s: float = Field(5.0, ge=0.0, le=300.0)
    # Repository control (load, unload) is off unless asked for, as Triton's default.
    model_control: Literal["none", "explicit"] = "none"
    # Requests one caller may have in the server at once (0: no limit); the default limit.
    caller_concurrency: int = Field(32, ge=0)
    # The token bucket is opt-in: it counts requests, not load (docs/configuration.md).
    rate_limit: float = Field(0.0, ge=0.0)
    rate_limit_burst: int = Field(100, ge=1)
    redis_url: str | None = None
    redis_prefix: str = Field("gga", min_length=1, max_length=64)
    device: str | None = None
    torch_threads: int | None = Field(None, ge=1, le=1024)
    # `gga serve --ray`: model replicas, CPUs each, and each replica's own metrics port (0: any).
    ray_replicas: int = Field(2, ge=1, le=1024)
    ray_replica_cpus: float = Field(1.0, gt=0.0)
    metrics_port: int = Field(0, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Empty: one batch size per power-of-two bucket up to max_batch_size (see ServedModel).
    warmup_batch_sizes: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # Measured strategy choices kept across restarts (service/warmup.py); empty: no cache.
    tuning_cache_dir: Path | None = Field(default_factory=default_tuning_directory)
    # Tune the buckets without a cached choice after ready (true) or before it (false).
    background_tuning: bool = True
    key_pepper: str = ""

    @field_validator("models", "api_keys", "warmup_batch_sizes", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("api_keys")
    @classmethod
    def _scoped_keys(cls, value: list[str]) -> list[str]:
        parse_static_keys(value)  # KEY or SCOPE:KEY; a bad entry stops the start here
        return value

    @field_validator("tuning_cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("model_control", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if any(b < 1 for b in self.warmup_batch_sizes):
            raise ValueError("warmup_batch_sizes must all be >= 1")
        if self.models and self.default_model not in self.models:
            # The default must be served; with an explicit list, its first entry is the default.
            self.default_model = self.models[0]
        if self.queue_size < self.max_batch_size:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be >= max_batch_size "
                f"({self.max_batch_size}), or no batch could ever fill: raise GGA_QUEUE_SIZE"
            )
        return self

    @property
    def drain_timeout_s(self) -> float:
        """The part of the shutdown window kept for draining the queues after HTTP stops."""
        return min(5.0, self.shutdown_timeout_s / 4)

    @property
    def graceful_timeout_s(self) -> float:
        """The part of the shutdown window in-flight HTTP requests get to finish."""
        return self.shutdown_timeout_s - self.drain_timeout_s

    @property
    def served_models(self) -> list[str]:
        """The models to load: ``models`` if given, else the default model alone."""
        return list(self.models) if self.models else [self.default_model]


def get_settings(**overrides: object) -> Settings:
    """Read the settings from the environment and ``.env``, with explicit overrides on top.

    Args:
        **overrides: Field values that win over the environment (the CLI's flags).

    Returns:
        The validated settings.
    """
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
