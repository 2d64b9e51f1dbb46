"""Triton's model configuration and statistics extensions of the Open Inference Protocol.

``tritonclient``'s ``get_model_config`` and ``get_inference_statistics`` call these; they are
registered before ``/v2/models/{name}`` so that ``/v2/models/stats`` is not read as a model name.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.errors import ModelNotFound
from service.model import ServedModel
from service.protocol.deps import CallerDep, DataPlaneDep
from service.protocol.v2_outputs import INPUT_NAME, served_outputs

EXTENSIONS = ["model_configuration", "statistics"]
_TRITON_TYPES = {
    "FP32": "TYPE_FP32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
    "BYTES": "TYPE_STRING",
}


def _check_version(model: ServedModel, version: str | None) -> None:
    if version is not None and version != str(model.card.version):
        raise ModelNotFound(
            f"{model.name} version {version}", [f"{model.name} {model.card.version}"]
        )


def model_config(model: ServedModel) -> dict[str, Any]:
    """The model's configuration in Triton's ``model_config`` JSON form."""
    k = len(model.card.class_names)
    dims = {"probabilities": [k]}
    return {
        "name": model.name,
        "platform": "pytorch_gga",
        "backend": "gga",
        "version_policy": {"specific": {"versions": [str(model.card.version)]}},
        "max_batch_size": model.batching.max_batch_size,
        "input": [
            {"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": list(model.card.input_shape)}
        ],
        "output": [
            {"name": name, "data_type": _TRITON_TYPES[datatype], "dims": dims.get(name, [1])}
            for name, datatype in served_outputs(model).items()
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(model.batching.max_latency_s * 1e6),
            "preferred_batch_size": [model.batching.max_batch_size],
        },
        "parameters": {
            "queue_size": {"string_value": str(model.batching.queue_size)},
            "alpha": {"string_value": f"{alpha:g}" if (alpha := model.alpha) is not None else ""},
        },
    }


async def get_config(name: str, dataplane: DataPlaneDep, caller: CallerDep) -> dict[str, Any]:
    """Triton model configuration (``tritonclient`` ``get_model_config``)."""
    return model_config(dataplane.model(name, require_ready=False))


async def get_version_config(
    name: str, version: str, dataplane: DataPlaneDep, caller: CallerDep
) -> dict[str, Any]:
    model = dataplane.model(name, require_ready=False)
    _check_version(model, version)
    return model_config(model)


def _stats(models: list[ServedModel]) -> dict[str, Any]:
    return {"model_stats": [m.stats.to_triton(m.name, str(m.card.version)) for m in models]}


async def get_all_stats(dataplane: DataPlaneDep, caller: CallerDep) -> dict[str, Any]:
    """Inference statistics of every served model (``get_inference_statistics()``)."""
    names = dataplane.registry.names()
    return _stats([dataplane.model(n, require_ready=False) for n in names])


async def get_model_stats(name: str, dataplane: DataPlaneDep, caller: CallerDep) -> dict[str, Any]:
    """Inference statistics of one model (``get_inference_statistics(name)``)."""
    return _stats([dataplane.model(name, require_ready=False)])


async def get_version_stats(
    name: str, version: str, dataplane: DataPlaneDep, caller: CallerDep
) -> dict[str, Any]:
    model = dataplane.model(name, require_ready=False)
    _check_version(model, version)
    return _stats([model])


def register_v2_extensions(router: APIRouter) -> None:
    """Add the configuration and statistics routes to the v2 router (before ``/models/{name}``)."""
    router.add_api_route("/models/stats", get_all_stats, methods=["GET"])
    router.add_api_route("/models/{name}/config", get_config, methods=["GET"])
    router.add_api_route(
        "/models/{name}/versions/{version}/config", get_version_config, methods=["GET"]
    )
    router.add_api_route("/models/{name}/stats", get_model_stats, methods=["GET"])
    router.add_api_route(
        "/models/{name}/versions/{version}/stats", get_version_stats, methods=["GET"]
    )
