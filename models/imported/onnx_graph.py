"""ONNX graphs: their input shape, their conversion for autograd, and parity with onnxruntime.

The gradient engine needs input gradients, which onnxruntime does not give; onnx2torch rebuilds
the graph as a ``torch.fx.GraphModule`` of ordinary modules, which autograd differentiates.
Every node is checked against onnx2torch's converters before converting, so a graph it cannot
rebuild is refused with the names of its operators rather than a trace from deep inside.

onnx2torch imports torchvision at import time, for two detection operators (NonMaxSuppression,
RoiAlign) that an image classifier never holds; torchvision would pin a torch of its own, so it
is left out and, when absent, a stand-in module whose functions refuse is registered instead.
Those two operators are then reported as unconvertible like any other.
"""

import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.imported.errors import ModelImportError

# Operators whose converter needs torchvision (see the module docstring).
TORCHVISION_OPS = frozenset({"NonMaxSuppression", "RoiAlign"})
PARITY_ATOL = 1e-4


@dataclass(frozen=True)
class OnnxParity:
    """torch (converted) against onnxruntime logits on the same random inputs."""

    max_abs_diff: float
    same_argmax: float
    n: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= PARITY_ATOL and self.same_argmax == 1.0


def _import_onnx2torch():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torchvision")
        stub.ops = types.ModuleType("torchvision.ops")

        def refuse(*_args, **_kwargs):
            raise ModelImportError("this operator needs torchvision, which gga-serve leaves out")

        stub.ops.roi_align = stub.ops.nms = stub.ops.box_convert = refuse
        sys.modules.setdefault("torchvision", stub)
        sys.modules.setdefault("torchvision.ops", stub.ops)
    try:
        import onnx2torch
        from onnx2torch.node_converters.registry import get_converter
    except ImportError as err:
        raise ModelImportError(
            "importing ONNX needs onnx2torch: pip install --no-deps -c constraints.txt onnx2torch "
            "(--no-deps: its declared torchvision would pull another torch)"
        ) from err
    return onnx2torch, get_converter


def _load(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
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


def unconvertible_operators(path: Path) -> list[str]:
    """``domain::OpType (opset N)`` of every node onnx2torch has no converter for."""
    model = _load(path)
    _, get_converter = _import_onnx2torch()
    opsets = {o.domain: o.version for o in model.opset_import}
    missing = []
    for node in model.graph.node:
        domain = node.domain or ""
        version = opsets.get(domain, opsets.get("ai.onnx", 1))
        label = f"{domain + '::' if domain else ''}{node.op_type} (opset {version})"
        if node.op_type in TORCHVISION_OPS and "torchvision" not in sys.modules:
            missing.append(label)
            continue
        try:
            get_converter(node.op_type, version, domain)
        except NotImplementedError:
            missing.append(label)
    return sorted(set(missing))


def convert_onnx(path: Path) -> nn.Module:
    """The ONNX graph in ``path`` as a differentiable ``torch.fx.GraphModule``.

    Raises:
        ModelImportError: an operator has no converter (named), or the conversion fails.
    """
    missing = unconvertible_operators(path)
    if missing:
        raise ModelImportError(
            f"{path}: onnx2torch cannot convert operator(s) {', '.join(missing)}, so no input "
            "gradient can be taken through this graph; re-export the model without them (or "
            "export it with torch.export as model.pt2)"
        )
    onnx2torch, _ = _import_onnx2torch()
    try:
        return onnx2torch.convert(_load(path))
    except Exception as err:  # a converter that accepts the op type may still reject attributes
        raise ModelImportError(
            f"{path}: onnx2torch failed to convert the graph ({type(err).__name__}: "
            f"{str(err)[:300]})"
        ) from err


def onnxruntime_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The graph's first output under onnxruntime (CPU).

    A graph exported with a fixed batch size (often 1) is run on chunks of that size; a last
    chunk that would not fill it is left out, so the result may have fewer rows than ``x``.

    Raises:
        ModelImportError: onnxruntime refuses the graph or the input.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        graph_input = session.get_inputs()[0]
        batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else len(x)
        batch = max(1, min(batch, len(x)))
        chunks = [
            session.run(None, {graph_input.name: x[i : i + batch].astype(np.float32)})[0]
            for i in range(0, len(x) - batch + 1, batch)
        ]
    except Exception as err:  # onnxruntime's own exception types
        raise ModelImportError(
            f"{path}: onnxruntime cannot run the graph on {x.shape} inputs "
            f"({type(err).__name__}: {str(err)[:300]})"
        ) from err
    return np.concatenate(chunks)


def check_onnx_parity(path: Path, module: nn.Module, x: torch.Tensor) -> OnnxParity:
    """Compare the converted module's logits with onnxruntime's on raw graph inputs ``x``."""
    with torch.no_grad():
        expected = module(x).numpy()
    got = onnxruntime_logits(path, x.numpy())
    expected = expected[: len(got)]  # a fixed-batch graph may leave a last partial chunk out
    return OnnxParity(
        max_abs_diff=float(np.abs(expected - got).max()),
        same_argmax=float((expected.argmax(1) == got.argmax(1)).mean()),
        n=len(x),
    )


def where_to_predict(path: Path, module: nn.Module, x: torch.Tensor) -> dict[str, object]:
    """Measure onnxruntime's forward against the converted graph's and state where to predict.

    Every prediction also needs its input gradients, which only the converted graph gives, and
    its forward pass computes the logits on the way: serving the logits from onnxruntime would
    add a second forward to every batch, saving nothing. The timings are recorded so the card
    shows what that second forward would cost; both run on one thread, so the figures compare the
    kernels rather than two thread pools fighting over shared cores.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    graph_input = session.get_inputs()[0]
    if isinstance(graph_input.shape[0], int):
        x = x[: graph_input.shape[0]]  # a graph exported with a fixed batch size
    feed = {graph_input.name: x.numpy().astype(np.float32)}

    def median_ms(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1e3, 3)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            torch_ms = median_ms(lambda: module(x))
    finally:
        torch.set_num_threads(threads)
    ort_ms = median_ms(lambda: session.run(None, feed))
    return {
        "predictions": "torch (the onnx2torch graph)",
        "why": "the gradient engine's forward on the converted graph yields the logits; "
        "onnxruntime would add its own forward to every batch",
        "batch": len(x),
        "threads": 1,
        "forward_ms": {"torch": torch_ms, "onnxruntime": ort_ms},
    }
