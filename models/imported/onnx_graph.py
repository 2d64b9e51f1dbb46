"""ONNX graphs: reading them, their input shape, and their conversion for autograd.

The gradient engine needs input gradients, which onnxruntime does not give; onnx2torch rebuilds
the graph as a ``torch.fx.GraphModule`` of ordinary modules, which autograd differentiates.
Before converting, the graph is normalised (``models.imported.onnx_normalise``: Identity nodes,
folded constants, fixed batch sizes...) and checked against the converters: onnx2torch's and
ours (``models.imported.onnx_converters``: the operator forms of opsets 18 and later). A graph
with a node that none converts at its own opset is converted to opset 17 with onnx's version
converter and checked again; one that still has such a node is refused with the names of its
operators rather than a trace from deep inside. Parity with onnxruntime on the original file
is ``models.imported.onnx_parity``'s.

onnx2torch imports torchvision at import time, for two detection operators (NonMaxSuppression,
RoiAlign) that an image classifier never holds; torchvision would pin a torch of its own, so it
is left out and, when absent, a stand-in module whose functions refuse is importable while
onnx2torch is imported. Those two operators are then reported as unconvertible like any other.
"""

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

from torch import nn

from models.imported.errors import ModelImportError

# Operators whose converter needs torchvision (see the module docstring).
TORCHVISION_OPS = frozenset({"NonMaxSuppression", "RoiAlign"})
# The newest opset onnx2torch's own converters cover throughout (and the one `gga export` writes):
# where a graph's own opset has a node no converter takes, the graph is converted to it.
CONVERTER_OPSET = 17
NORMALISATION_KEY = "onnx_normalisation"  # in the converted GraphModule's ``meta``


def _torchvision_installed() -> bool:
    return importlib.util.find_spec("torchvision") is not None


@contextlib.contextmanager
def _torchvision_stand_in():
    """A torchvision whose functions refuse, importable while onnx2torch is imported.

    It is taken out of ``sys.modules`` again afterwards (onnx2torch keeps its own references):
    the rest of the process, torch's ONNX exporter for one, still finds torchvision absent.
    """
    if _torchvision_installed() or "onnx2torch" in sys.modules:
        yield
        return
    stub = types.ModuleType("torchvision")
    stub.ops = types.ModuleType("torchvision.ops")

    def refuse(*_args, **_kwargs):
        raise ModelImportError("this operator needs torchvision, which gga-serve leaves out")

    stub.ops.roi_align = stub.ops.nms = stub.ops.box_convert = refuse
    sys.modules.update({"torchvision": stub, "torchvision.ops": stub.ops})
    try:
        yield
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]


def _import_onnx2torch():
    try:
        with _torchvision_stand_in():
            import onnx2torch
            from onnx2torch.node_converters.registry import get_converter
    except ImportError as err:
        raise ModelImportError(
            "importing ONNX needs onnx2torch: pip install --no-deps -c constraints.txt onnx2torch "
            "(--no-deps: its declared torchvision would pull another torch)"
        ) from err
    from models.imported.onnx_converters import register_converters

    register_converters()
    return onnx2torch, get_converter


def _load(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))  # with the tensors of its external data files, if any
        onnx.checker.check_model(model)
    except Exception as err:  # DecodeError, ValidationError, missing external data...
        raise ModelImportError(
            f"{path}: not a valid ONNX model ({type(err).__name__}: {str(err)[:300]})"
        ) from err
    return model


def onnx_input_shape(path: Path) -> tuple[int | None, ...]:
    """The (C, H, W) of the graph's one input; ``None`` where a dimension is dynamic.

    Raises:
        ModelImportError: the graph does not take exactly one 4-D input.
    """
    model = _load(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelImportError(
            f"{path}: the graph takes {len(inputs)} inputs ({[i.name for i in inputs]}); an "
            "image classifier takes one (N, C, H, W) tensor"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelImportError(
            f"{path}: input {inputs[0].name!r} has {len(dims)} dimensions; expected (N, C, H, W)"
        )
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])


def external_data_files(path: Path) -> list[str]:
    """The files beside ``path`` that hold its tensors (``torch.onnx.export`` writes one,
    ``<file>.data``, unless given ``external_data=False``); empty for a self-contained file."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    tensors = [*model.graph.initializer]
    tensors += [a.t for node in model.graph.node for a in node.attribute if a.HasField("t")]
    return sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})


def write_self_contained(path: Path, target: Path) -> None:
    """Write the graph of ``path`` with its external data inside it, as one file ``target``.

    Raises:
        ModelImportError: an external data file is not beside ``path``, the graph cannot be
            read, or its weights do not fit one ONNX file (2 GB, protobuf's limit).
    """
    import onnx

    missing = [name for name in external_data_files(path) if not (path.parent / name).is_file()]
    if missing:
        raise ModelImportError(
            f"{path}: its weights are in {', '.join(missing)}, which should be beside it "
            "(torch.onnx.export writes them there): keep the files together, or export with "
            "torch.onnx.export(..., external_data=False) for one file"
        )
    model = _load(path)
    try:
        onnx.save_model(model, str(target))
    except ValueError as err:  # protobuf refuses messages over 2 GB
        raise ModelImportError(
            f"{path}: its weights do not fit one ONNX file (2 GB), which gga-serve stores; "
            f"export the model with torch.export as model.pt2 instead ({str(err)[:200]})"
        ) from err


def unconvertible_operators(model) -> list[str]:
    """``domain::OpType (opset N)`` of every node of ``model`` (an ``onnx.ModelProto``) that
    neither onnx2torch nor ``models.imported.onnx_converters`` has a converter for."""
    _, get_converter = _import_onnx2torch()
    opsets = {o.domain: o.version for o in model.opset_import}
    missing = []
    for node in model.graph.node:
        domain = node.domain or ""
        version = opsets.get(domain, opsets.get("ai.onnx", 1))
        label = f"{domain + '::' if domain else ''}{node.op_type} (opset {version})"
        if node.op_type in TORCHVISION_OPS and not _torchvision_installed():
            missing.append(label)
            continue
        try:
            get_converter(node.op_type, version, domain)
        except NotImplementedError:
            missing.append(label)
    return sorted(set(missing))


def convert_onnx(path: Path) -> nn.Module:
    """The ONNX graph in ``path``, normalised, as a differentiable ``torch.fx.GraphModule``.

    What the normalisation changed is in the module's ``meta[NORMALISATION_KEY]``.

    Raises:
        ModelImportError: an operator has no converter (named), or the conversion fails.
    """
    onnx2torch, _ = _import_onnx2torch()
    try:
        from models.imported.onnx_normalise import at_opset, normalise_onnx
    except ImportError as err:
        raise ModelImportError(
            "importing ONNX needs the [import] extra (onnx-ir and onnxscript normalise the graph):"
            " pip install -c constraints.txt 'gga-serve[import]'"
        ) from err
    model = _load(path)
    try:
        normalised = normalise_onnx(model)
    except Exception as err:  # onnx_ir and onnxscript raise their own types on a strange graph
        raise ModelImportError(
            f"{path}: the graph could not be normalised for conversion ({type(err).__name__}: "
            f"{str(err)[:300]})"
        ) from err
    missing = unconvertible_operators(normalised.model)
    if missing and normalised.opset != CONVERTER_OPSET:
        converted = at_opset(normalised, CONVERTER_OPSET)
        if converted is not None and not unconvertible_operators(converted.model):
            normalised, missing = converted, []
    if missing:
        raise ModelImportError(
            f"{path}: cannot convert operator(s) {', '.join(missing)}: neither onnx2torch nor "
            f"gga-serve's own converters take them (nor their opset-{CONVERTER_OPSET} forms), so "
            "no input gradient can be taken through this graph; re-export the model without "
            "them (or export it with torch.export as model.pt2)"
        )
    try:
        module = onnx2torch.convert(normalised.model)
    except Exception as err:  # a converter that accepts the op type may still reject attributes
        raise ModelImportError(
            f"{path}: onnx2torch failed to convert the graph ({type(err).__name__}: "
            f"{str(err)[:300]})"
        ) from err
    module.meta[NORMALISATION_KEY] = normalised.to_dict()
    return module
