"""The converted graph against onnxruntime: parity of the logits, and where predictions run.

onnxruntime runs the user's file as it came (external data and all), never the normalised graph
(``models.imported.onnx_normalise``): the parity check is what shows that normalising and
converting kept the file's numbers.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.imported.errors import ModelImportError

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
