"""Penultimate features of a traced graph: the input of its final linear layer, cut out.

The feature-based trust views need ``model(x) == head(embed(x))`` with a linear ``head``
(``models.penultimate``). A ``torch.fx`` graph (onnx2torch's conversion, ``torch.export``'s
module) is walked back from its output: if the last operation is a linear layer (``nn.Linear``,
ONNX Gemm converted to it, or ``aten.linear`` on constant weights), its input, followed back
through operations that change nothing in eval mode (dropout, identity, flatten), is the feature
node. The user may name a node on that chain (``--features NODE``); anything else would not give
``logits == head(features)`` and is refused. TorchScript graphs are not cut (no fx graph).
"""

import copy
import logging
from dataclasses import dataclass

import torch
from torch import fx, nn

from models.imported.errors import ModelImportError

logger = logging.getLogger(__name__)

_aten = torch.ops.aten
# Operations that pass their first input through unchanged in eval mode (up to a flatten, which
# ``embed`` applies anyway).
_PASS_FUNCTIONS = {
    _aten.dropout.default,
    _aten.flatten.using_ints,
    _aten.clone.default,
    _aten.alias.default,
    torch.flatten,
    nn.functional.dropout,
}
_PASS_MODULES = (nn.Dropout, nn.Identity, nn.Flatten)
_LINEAR_FUNCTIONS = {_aten.linear.default, nn.functional.linear}


@dataclass
class FeatureCut:
    """Where a graph's penultimate features are.

    Attributes:
        node: name of the feature node.
        head: a copy of the final linear layer (``logits == head(flatten(node))``).
        chain: names of the nodes that qualify as feature node, nearest the head last.
    """

    node: str
    head: nn.Linear
    chain: list[str]


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    value: object = gm
    for part in target.split("."):
        value = getattr(value, part)
    assert isinstance(value, torch.Tensor)
    return value


def _final_linear(gm: fx.GraphModule) -> tuple[fx.Node, nn.Linear] | None:
    """The last node (a linear layer) and a copy of it, or ``None``."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    last = output.args[0]
    while isinstance(last, (tuple, list)) and len(last) == 1:
        last = last[0]
    if not isinstance(last, fx.Node):
        return None
    if last.op == "call_module":
        module = gm.get_submodule(str(last.target))
        if type(module) is nn.Linear:
            return last, copy.deepcopy(module)
        return None
    if last.op == "call_function" and last.target in _LINEAR_FUNCTIONS:
        weight = last.args[1]
        bias = last.args[2] if len(last.args) > 2 else last.kwargs.get("bias")
        if not isinstance(weight, fx.Node) or weight.op != "get_attr":
            return None
        if bias is not None and (not isinstance(bias, fx.Node) or bias.op != "get_attr"):
            return None
        w = _attr(gm, str(weight.target)).detach().clone()
        head = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        with torch.no_grad():
            head.weight.copy_(w)
            if bias is not None:
                head.bias.copy_(_attr(gm, str(bias.target)).detach())
        return last, head
    return None


def _passes_through(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _PASS_MODULES)
    return node.op == "call_function" and node.target in _PASS_FUNCTIONS


def find_features(gm: nn.Module, named: str | None = None) -> FeatureCut | None:
    """The feature node of ``gm``: the one named, or the one found, or ``None``.

    Args:
        gm: a traced graph (anything else has no cut: ``None``, or an error if ``named``).
        named: the node the user names (``--features``).

    Returns:
        The cut, or ``None`` when the graph does not end in a linear layer.

    Raises:
        ModelImportError: ``named`` is given but is not on the chain into the final linear layer.
    """
    if not isinstance(gm, fx.GraphModule):
        if named:
            raise ModelImportError(
                f"--features {named}: only graphs traced by torch.export or converted from ONNX "
                "can be cut at a node; a TorchScript model is served without feature views"
            )
        return None
    found = _final_linear(gm)
    if found is None:
        if named:
            raise ModelImportError(
                f"--features {named}: the graph does not end in a linear layer (Linear/Gemm), so "
                "no node gives logits = Linear(features); leave --features out"
            )
        return None
    last, head = found
    chain = []
    node = last.args[0]
    while isinstance(node, fx.Node) and node.op != "placeholder":
        chain.append(node.name)
        if not _passes_through(gm, node):
            break
        node = node.args[0]
    if not chain:
        return None
    if named is None:
        return FeatureCut(node=chain[-1], head=head, chain=chain[::-1])
    if named not in chain:
        skip = ("placeholder", "output", "get_attr")
        names = [n.name for n in gm.graph.nodes if n.op not in skip]
        raise ModelImportError(
            f"--features {named}: not the input of the final linear layer {last.name!r} (up to "
            f"dropout and flatten); use one of {chain[::-1]} (graph nodes: {names[-12:]})"
            if named in names
            else f"--features {named}: no such node; the graph's nodes end with {names[-12:]}"
        )
    return FeatureCut(node=named, head=head, chain=chain[::-1])


def cut_graph(gm: fx.GraphModule, node_name: str) -> fx.GraphModule:
    """A module computing ``gm``'s graph up to ``node_name``, returning that node's value."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node.name == node_name:
            graph.output(env[node])
            break
    else:
        raise ModelImportError(f"no node {node_name!r} in the graph")
    trunk = fx.GraphModule(gm, graph)
    trunk.graph.eliminate_dead_code()
    trunk.recompile()
    return trunk
