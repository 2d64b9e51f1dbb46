"""The served models by name: built from the settings, loaded and unloaded while serving.

The Open Inference Protocol's model repository extension (``service.protocol.v2_repository``)
loads a model of the repository, or replaces or unloads a served one, without a restart. A model
is loaded beside the one it replaces and swapped in only once ready; a model leaving stops
taking requests, then drains its queue, so every request it accepted is computed and stored
before it answers (the batcher's persist thread commits each batch before its responses).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from models.repository import ModelRepository
from service.errors import ModelNotFound
from service.metrics import ServiceMetrics
from service.model import BatchingConfig, ServedModel
from service.settings import Settings
from service.store import Database

logger = logging.getLogger(__name__)

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"


class ModelRegistry:
    """The models one server hosts.

    Args:
        models: Served models keyed by name.
        repository: Where ``load`` finds models by name (None: ``load`` only reloads served ones
            and ``index`` lists only them).
        factory: Builds a not-yet-loaded ``ServedModel`` for a name (None: ``load`` refuses
            names that are not served).
    """

    def __init__(
        self,
        models: dict[str, ServedModel],
        repository: ModelRepository | None = None,
        factory: Callable[[str], ServedModel] | None = None,
    ) -> None:
        self._models = dict(models)
        self.repository = repository
        self._factory = factory
        self._lock = threading.Lock()  # guards _models and _states
        self._name_locks: dict[str, threading.Lock] = {}
        self._states: dict[str, tuple[str, str]] = {}  # name -> (state, reason) while changing

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
            stop_timeout_s=settings.drain_timeout_s,
            pad_batches=settings.pad_batches,
        )

        def factory(name: str) -> ServedModel:
            return ServedModel(
                name,
                repository,
                db,
                metrics,
                batching=batching,
                device=settings.device,
                warmup_batch_sizes=settings.warmup_batch_sizes,
                tuning_cache_dir=settings.tuning_cache_dir,
                background_tuning=settings.background_tuning,
            )

        models = {name: factory(name) for name in settings.served_models}
        return cls(models, repository, factory)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def get(self, name: str) -> ServedModel:
        """The served model called ``name``.

        Raises:
            ModelNotFound: No such model is served.
        """
        with self._lock:
            model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, self.names())
        return model

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._models

    @property
    def ready(self) -> bool:
        with self._lock:
            models = list(self._models.values())
        return bool(models) and all(m.ready for m in models)

    def tuning(self) -> dict[str, list[int]]:
        """Per model, the batch buckets still being measured in the background (if any)."""
        with self._lock:
            models = list(self._models.items())
        return {
            name: pending
            for name, m in models
            if m.tuning is not None and (pending := m.tuning.pending)
        }

    def load_all(self) -> None:
        """Load every model (sequentially: they share the CPU)."""
        for model in list(self._models.values()):
            model.load()

    def stop_all(self) -> None:
        """Stop every batcher after draining its queue."""
        for model in list(self._models.values()):
            model.stop()

    # -- the repository extension -------------------------------------------------------------

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _set_state(self, name: str, state: str | None, reason: str = "") -> None:
        with self._lock:
            if state is None:
                self._states.pop(name, None)
            else:
                self._states[name] = (state, reason)

    def load(self, name: str) -> ServedModel:
        """Load ``name`` from the repository and serve it; a served one is replaced.

        The new model loads (weights, detector, engine warm-up) while the old one, if any, keeps
        serving; it is swapped in once ready, and the old one is then drained and stopped.
        Blocking: call it off the event loop.

        Raises:
            ModelNotFound: The repository has no such model.
            ModelLoadError, DetectorNotFoundError, DetectorFileError: The folder cannot serve.
        """
        if self._factory is None or self.repository is None:
            raise ModelNotFound(name, self.names())
        with self._name_lock(name):
            if name not in self.repository.names():
                raise ModelNotFound(name, self.repository.names())
            self._set_state(name, LOADING)
            try:
                model = self._factory(name)
                model.load()
            except Exception as err:
                self._set_state(name, UNAVAILABLE, f"{type(err).__name__}: {err}")
                raise
            with self._lock:
                old = self._models.get(name)
                self._models[name] = model
                self._states.pop(name, None)
            logger.info("model %s loaded%s", name, " (replacing the served one)" if old else "")
            if old is not None:
                old.stop()
            return model

    def unload(self, name: str) -> None:
        """Stop serving ``name``: refuse new requests, finish the queued ones, then forget it.

        Blocking: call it off the event loop.

        Raises:
            ModelNotFound: No such model is served.
        """
        with self._name_lock(name):
            model = self.get(name)
            self._set_state(name, UNLOADING)
            try:
                model.stop()  # not ready at once (new requests get 503), then the queue drains
            finally:
                with self._lock:
                    if self._models.get(name) is model:
                        del self._models[name]
                    self._states[name] = (UNAVAILABLE, "unloaded")
            logger.info("model %s unloaded", name)

    def index(self) -> list[dict[str, Any]]:
        """Every model of the repository and every served one, with its state.

        Returns:
            ``{"name", "version", "state", "reason"}`` per model, by name; ``state`` is READY,
            LOADING, UNLOADING or UNAVAILABLE (not loaded, unloaded, or its load failed).
        """
        with self._lock:
            served = dict(self._models)
            states = dict(self._states)
        names = set(served) | set(states)
        if self.repository is not None:
            names |= set(self.repository.names())
        entries = []
        for name in sorted(names):
            model = served.get(name)
            version = str(model.card.version) if model is not None else self._version(name)
            if name in states:
                state, reason = states[name]
            elif model is not None:
                state, reason = (READY, "") if model.ready else (LOADING, "")
            else:
                state, reason = UNAVAILABLE, "not loaded"
            entries.append({"name": name, "version": version, "state": state, "reason": reason})
        return entries

    def _version(self, name: str) -> str:
        try:
            assert self.repository is not None
            return str(self.repository.card(name).version)
        except Exception:  # a half-written or broken folder is still listed, without a version
            return ""
