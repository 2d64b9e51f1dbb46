"""An ONNX graph made plain before onnx2torch converts it, computing exactly what it computed.

Exporters write the same network in different forms, and onnx2torch only converts the plainest.
torch's legacy exporter stores equal constants once (the zero biases of an untrained network's
folded BatchNorms, say) and reaches each use through an ``Identity`` node, where onnx2torch's Conv
finds no initializer (``KeyError: 'onnx::Conv_197'``); older exporters list every weight as a
graph input too; shapes arrive as chains of ``Shape``, ``Gather`` and ``Concat`` or as
``Constant`` nodes; the dynamo exporter writes ``Reshape`` with ``allowzero=1``, which onnx2torch
refuses, and, without ``dynamic_shapes``, fixes the batch size into the shape of its final
``Reshape``. ``normalise_onnx`` takes these away, in this order:

1. weights listed as graph inputs become plain initializers (the image is the only input fed);
2. local functions are inlined;
3. ``Identity`` nodes are removed;
4. constants are folded (onnxscript's folder: shape arithmetic on fixed shapes, transposed
   weights, dropout in inference mode) and nodes nothing uses are dropped;
5. ``Constant`` nodes become initializers, where onnx2torch looks for weights;
6. ``Reshape``: ``allowzero=1`` is dropped where the target shape holds no 0 (it changes nothing
   there), and a target shape whose first entry is the batch size the file was exported with
   takes the input's first dimension instead (0), so the converted graph takes any batch;
7. shapes are inferred, propagating values through shape arithmetic (onnx's ``data_prop``):
   converters that build their module from an input's shape (LayerNormalization) then know it
   behind a Reshape whose target the graph computes.

``at_opset`` converts a graph to another opset with onnx's version converter: the conversion
uses it when some node has no converter at the graph's own opset (``onnx_graph``). Every import
compares the converted graph with onnxruntime running the original file, so a step that changed
the numbers would be refused there.
"""

from dataclasses import dataclass, replace

import numpy as np
import onnx
import onnx.shape_inference
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as ir_passes
from onnxscript import optimizer


@dataclass(frozen=True)
class NormalisedOnnx:
    """A normalised graph and what the normalisation changed (recorded in the card).

    Attributes:
        model: the graph onnx2torch converts.
        opset: the standard-domain opset of the file.
        nodes: the node count of the file and of ``model``.
        identities_removed: ``Identity`` nodes taken out.
        reshapes_batch_freed: ``Reshape`` targets whose fixed batch size became 0 (any batch).
        converted_to_opset: the opset ``at_opset`` took the graph to, or ``None``.
    """

    model: onnx.ModelProto
    opset: int
    nodes: tuple[int, int]
    identities_removed: int
    reshapes_batch_freed: int
    converted_to_opset: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "opset": self.opset,
            "nodes": list(self.nodes),
            "identities_removed": self.identities_removed,
            "reshapes_batch_freed": self.reshapes_batch_freed,
            "converted_to_opset": self.converted_to_opset,
        }


def standard_opset(model: onnx.ModelProto) -> int:
    """The version of the standard (``""`` or ``ai.onnx``) domain the graph imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _count(model: ir.Model, op_type: str) -> int:
    return sum(1 for node in model.graph if node.op_type == op_type and node.domain == "")


def _drop_needless_allowzero(model: ir.Model) -> None:
    """``allowzero=1`` only matters for a 0 in the target shape; onnx2torch refuses the flag."""
    for node in model.graph:
        allowzero = node.attributes.get("allowzero")
        if node.op_type != "Reshape" or allowzero is None or allowzero.as_int() == 0:
            continue
        target = node.inputs[1].const_value if len(node.inputs) > 1 else None
        if target is not None and not (target.numpy() == 0).any():
            node.attributes["allowzero"] = ir.AttrInt64("allowzero", 0)


def _free_fixed_batch(model: ir.Model) -> int:
    """Reshape targets that repeat a fixed batch size take the input's first dimension (0).

    An exporter given one example and no dynamic batch axis writes the batch size into every
    shape it folds: ``Reshape(pooled, [1, 512])`` before the classifier's Gemm. Where the data
    reaching the Reshape has that batch size as its first dimension, 0 ("copy the input's")
    computes the same for the exported batch and follows any other. The import's checks (batch
    independence, and onnxruntime run batch by batch against the converted graph on many
    inputs at once) catch a graph where the first dimension was not the batch after all.

    Returns:
        How many Reshape nodes were changed.
    """
    if len(model.graph.inputs) != 1 or model.graph.inputs[0].shape is None:
        return 0
    batch = model.graph.inputs[0].shape[0]
    if not isinstance(batch, int):
        return 0  # a dynamic batch: nothing was fixed
    freed = 0
    for node in model.graph:
        if node.op_type != "Reshape" or node.domain != "" or len(node.inputs) < 2:
            continue
        data, shape = node.inputs[0], node.inputs[1]
        allowzero = node.attributes.get("allowzero")
        if shape is None or shape.const_value is None or data is None or not data.shape:
            continue
        target = shape.const_value.numpy()
        if allowzero is not None and allowzero.as_int() == 1:
            continue  # 0 would then mean a zero-sized dimension
        if target.ndim != 1 or target.size == 0 or target[0] != batch or data.shape[0] != batch:
            continue
        freed_target = target.copy()
        freed_target[0] = 0
        name = f"{shape.name}_any_batch_{freed}"
        value = ir.Value(name=name, const_value=ir.tensor(freed_target.astype(np.int64), name=name))
        model.graph.register_initializer(value)
        node.replace_input_with(1, value)
        freed += 1
    return freed


def normalise_onnx(model: onnx.ModelProto) -> NormalisedOnnx:
    """The graph of ``model`` in the plain form onnx2torch converts (module docstring).

    Args:
        model: the graph as loaded, external data included; it is not changed.

    Returns:
        The normalised graph and what changed.
    """
    graph = ir.serde.deserialize_model(model)
    before = len(graph.graph)
    identities = _count(graph, "Identity")
    ir_passes.RemoveInitializersFromInputsPass()(graph)
    graph.ir_version = max(graph.ir_version, 4)  # IR 3 required every initializer as an input
    ir_passes.InlinePass()(graph)
    ir_passes.IdentityEliminationPass()(graph)
    optimizer.fold_constants_ir(graph, onnx_shape_inference=True)
    ir_passes.IdentityEliminationPass()(graph)  # folding turns some no-ops into Identity
    ir_passes.RemoveUnusedNodesPass()(graph)
    ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(graph)
    _drop_needless_allowzero(graph)
    freed = _free_fixed_batch(graph)
    ir_passes.RemoveUnusedNodesPass()(graph)
    plain = onnx.shape_inference.infer_shapes(ir.serde.serialize_model(graph), data_prop=True)
    return NormalisedOnnx(
        model=plain,
        opset=standard_opset(model),
        nodes=(before, len(graph.graph)),
        identities_removed=identities - _count(graph, "Identity"),
        reshapes_batch_freed=freed,
    )


def at_opset(normalised: NormalisedOnnx, opset: int) -> NormalisedOnnx | None:
    """A normalised graph converted to ``opset`` by onnx's version converter, normalised again.

    Returns:
        ``None`` where the version converter cannot convert the graph (an operator with no form
        at that opset, such as Gelu below opset 20, or an adapter that refuses the node).
    """
    try:
        converted = onnx.version_converter.convert_version(normalised.model, opset)
        onnx.checker.check_model(converted)
        again = normalise_onnx(converted)  # adapters write Constant nodes, for one
    except Exception:  # the converter raises RuntimeError, ValidationError, IndexError...
        return None
    return replace(
        normalised,
        model=again.model,
        nodes=(normalised.nodes[0], again.nodes[1]),
        identities_removed=normalised.identities_removed + again.identities_removed,
        reshapes_batch_freed=normalised.reshapes_batch_freed + again.reshapes_batch_freed,
        converted_to_opset=opset,
    )
