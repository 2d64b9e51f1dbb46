"""The served models by name: built from the settings, loaded together, stopped together."""

from __future__ import annotations

import logging

from models.repository import ModelRepository
from service.errors import ModelNotFound
from service.metrics import ServiceMetrics
from service.model import BatchingConfig, ServedModel
from service.settings import Settings
from service.store import Database

logger = logging.getLogger(__name__)


class ModelRegistry:
    """The models one server hosts.

    Args:
        models: Served models keyed by name.
    """

    def __init__(self, models: dict[str, ServedModel]) -> None:
        self._models = dict(models)

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, metrics: ServiceMetrics
    ) -> ModelRegistry:
        """One :class:`ServedModel` per configured name (not loaded yet).

        Raises:
            ModelNotFoundError: The repository or a named model does not exist.
        """
        repository = ModelRepository(settings.repo)
        batching = BatchingConfig(
            max_batch_size=settings.max_batch_size,
            max_latency_s=settings.max_latency_ms / 1000.0,
            queue_size=settings.queue_size,
            queue_budget_s=settings.queue_budget_s,
            stop_timeout_s=settings.drain_timeout_s,
            pad_batches=settings.pad_batches,
        )
        models = {
            name: ServedModel(
                name,
                repository,
                db,
                metrics,
                batching=batching,
                device=settings.device,
                warmup_batch_sizes=settings.warmup_batch_sizes,
            )
            for name in settings.served_models
        }
        return cls(models)

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> ServedModel:
        """The served model called ``name``.

        Raises:
            ModelNotFound: No such model is served.
        """
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        return name in self._models

    @property
    def ready(self) -> bool:
        return bool(self._models) and all(m.ready for m in self._models.values())

    def load_all(self) -> None:
        """Load every model (sequentially: they share the CPU)."""
        for model in self._models.values():
            model.load()

    def stop_all(self) -> None:
        """Stop every batcher after draining its queue."""
        for model in self._models.values():
            model.stop()
