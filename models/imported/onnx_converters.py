"""Converters of our own for the ONNX operator forms onnx2torch 1.5 lacks, added to its registry.

onnx2torch converts the operator revisions of opsets up to about 17; current exporters write
newer ones (torch 2.13's dynamo exporter writes opset 18 to 23). Three kinds are added here:

- **Revisions that only admit more tensor types.** Opsets 19 to 25 re-issue Conv, MaxPool,
  Reshape, Flatten, Shape, Transpose... with wider type lists (bfloat16, float8, int4) and
  nothing else changed. The converter onnx2torch has for the previous revision is registered
  again under the new one when onnx's own schema says nothing else changed: the same
  attributes (names, types, defaults), the same inputs and outputs, and the same specification
  text. A revision that changes any of those is not aliased, so a later onnx that redefines an
  operator is refused by name instead of converted by the old rules.
- **Revisions that changed a signature**, converted by rules written here: Reduce* from opset
  18 (the axes moved from an attribute to an input), AveragePool from 19 (dilations), Pad from
  18 (an optional axes input) and Cast from 19 (a ``saturate`` flag for float8 targets only).
- **Operators onnx2torch has no converter for**: Gelu (opset 20) and GlobalMaxPool.

Import this module only through ``models.imported.onnx_graph``, which installs the torchvision
stand-in onnx2torch's import needs first, and call ``register_converters`` once.
"""

import functools
import logging
from collections.abc import Callable, Iterator

import torch
from onnx import defs
from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OperationConverterResult,
    get_const_value,
    onnx_mapping_from_node,
)
from torch import nn

logger = logging.getLogger(__name__)

# Revisions whose specification text changed without changing what a float32 graph computes.
# MaxPool-22 adds "sliding windows that would start in the right padded region are ignored"
# (ceil_mode), which is what torch's max_pool2d, and onnx2torch's MaxPool, already do.
_CLARIFIED_ONLY = {("MaxPool", 22)}
# Cast-19 adds ``saturate`` and Cast-24 ``round_mode``, which only act when casting to a float8
# type; onnx2torch's Cast has no float8 type and refuses such a cast. The other revisions add types.
_CAST_REVISIONS = (19, 21, 23, 24, 25)


def _reduce_prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for dim in sorted((d % x.dim() for d in dims), reverse=True):  # highest first: indices hold
        x = x.prod(dim, keepdim=keepdim)
    return x


# The Reduce* revisions of opset 18 (ReduceSum took its axes as an input from 13 on, which
# onnx2torch converts).
_REDUCTIONS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: x.mean(d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(d, keepdim=k),
    "ReduceProd": _reduce_prod,
    "ReduceL1": lambda x, d, k: x.abs().sum(d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.linalg.vector_norm(x, 2, d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: x.sum(d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: x.logsumexp(d, keepdim=k),
}


class Reduce(nn.Module):
    """An ONNX Reduce* of opset 18 or later: the axes are an input, constant or computed.

    Args:
        op_type: ``ReduceMean``, ``ReduceMax``... (a key of ``_REDUCTIONS``).
        axes: the axes when the graph fixes them, else ``None`` (they come with each call).
        keepdims: keep the reduced axes with size 1.
        noop_with_empty_axes: with no axes, return the input (else reduce over every axis).
    """

    def __init__(
        self, op_type: str, axes: list[int] | None, keepdims: bool, noop_with_empty_axes: bool
    ) -> None:
        super().__init__()
        self.op_type = op_type
        self.axes = axes
        self.keepdims = keepdims
        self.noop_with_empty_axes = noop_with_empty_axes

    def forward(self, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = self.axes if axes is None else [int(a) for a in axes.tolist()]
        if not dims:
            if self.noop_with_empty_axes:
                return x
            dims = list(range(x.dim()))
        return _REDUCTIONS[self.op_type](x, dims, self.keepdims)


def _reduce(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    keepdims = bool(node.attributes.get("keepdims", 1))
    noop = bool(node.attributes.get("noop_with_empty_axes", 0))
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    axes: list[int] | None = []
    if axes_name:
        try:  # constant axes (the normalisation lifts every constant to an initializer)
            constant = torch.as_tensor(get_const_value(axes_name, graph))
            axes = [int(a) for a in constant.reshape(-1).tolist()]
        except KeyError:
            axes = None  # computed in the graph: read at each call
    module = Reduce(node.operation_type, axes, keepdims, noop)
    inputs = node.input_values[:1] if axes is not None else node.input_values[:2]
    return OperationConverterResult(module, OnnxMapping(inputs=inputs, outputs=node.output_values))


class Gelu(nn.Module):
    """ONNX Gelu (opset 20): the exact form, or the tanh approximation."""

    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x, approximate=self.approximate)


def _gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    approximate = node.attributes.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu with approximate={approximate!r}")
    return OperationConverterResult(Gelu(approximate), onnx_mapping_from_node(node))


class GlobalMaxPool(nn.Module):
    """ONNX GlobalMaxPool: the maximum over every spatial axis, kept with size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def _global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(GlobalMaxPool(), onnx_mapping_from_node(node))


def _average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    dilations = node.attributes.get("dilations")
    if dilations is not None and any(d != 1 for d in dilations):
        raise NotImplementedError(f"AveragePool with dilations {list(dilations)}")
    return get_converter("AveragePool", 11)(node, graph)  # the same pooling without dilations


def _pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if len(node.input_values) > 3 and node.input_values[3]:
        raise NotImplementedError("Pad with an axes input (pad every axis instead)")
    if node.attributes.get("mode", "constant") == "wrap":
        raise NotImplementedError("Pad with mode 'wrap'")
    return get_converter("Pad", 13)(node, graph)  # pads (and a fill value) as inputs, as at 13


def _cast(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return get_converter("Cast", 13)(node, graph)  # see _CAST_REVISIONS


def _signature(schema: defs.OpSchema) -> tuple:
    attributes = sorted(
        (name, str(a.type), a.required, a.default_value.SerializeToString())
        for name, a in schema.attributes.items()
    )
    inputs = [(p.name, str(p.option)) for p in schema.inputs]
    outputs = [(p.name, str(p.option)) for p in schema.outputs]
    return attributes, inputs, outputs, schema.doc


def _registered(op_type: str, version: int) -> bool:
    try:
        get_converter(op_type, version)
    except NotImplementedError:
        return False
    return True


def type_only_revisions() -> Iterator[tuple[str, int, int]]:
    """``(op_type, revision, converted_revision)`` for each standard-domain revision that no
    converter is registered for but that only widens the types of one that has a converter."""
    history: dict[str, dict[int, defs.OpSchema]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "":
            history.setdefault(schema.name, {})[schema.since_version] = schema
    for op_type, revisions in sorted(history.items()):
        converted = None
        for version in sorted(revisions):
            if _registered(op_type, version):
                converted = version
            elif converted is not None and (
                _signature(revisions[version]) == _signature(revisions[converted])
                or (op_type, version) in _CLARIFIED_ONLY
            ):
                yield op_type, version, converted


@functools.cache
def register_converters() -> None:
    """Add this module's converters, then the type-only revisions, to onnx2torch's registry."""
    for op_type in _REDUCTIONS:
        add_converter(op_type, 18)(_reduce)
    add_converter("ReduceMax", 20)(_reduce)  # 20 adds booleans (False < True, as torch orders)
    add_converter("ReduceMin", 20)(_reduce)
    add_converter("Gelu", 20)(_gelu)
    add_converter("GlobalMaxPool", 1)(_global_max_pool)
    add_converter("GlobalMaxPool", 22)(_global_max_pool)
    for version in (19, 22):  # 22 clarifies ceil_mode as for MaxPool-22 (torch agrees)
        add_converter("AveragePool", version)(_average_pool)
    for version in (18, 19, 21, 23, 24, 25):
        add_converter("Pad", version)(_pad)
    for version in _CAST_REVISIONS:
        add_converter("Cast", version)(_cast)
    aliases = list(type_only_revisions())  # listed first: registering changes what is registered
    for op_type, version, converted in aliases:
        add_converter(op_type, version)(get_converter(op_type, converted))
    logger.debug("registered %d type-only ONNX revisions", len(aliases))
