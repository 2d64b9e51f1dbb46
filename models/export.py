"""ONNX export of a model folder, with a parity check under onnxruntime.

The exported graph takes ``image`` (float32 pixels in [0, 1], shape (N, C, H, W), N dynamic) and
returns ``logits`` (N, num_classes); the normalisation is inside the graph, as in the torch model.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.card import ONNX_FILE, sha256_file
from models.repository import LoadedModel

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_ATOL = 1e-4


@dataclass
class Parity:
    max_abs_diff: float
    same_argmax: float  # share of inputs with the same predicted class
    n: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= PARITY_ATOL and self.same_argmax == 1.0


def export_onnx(loaded: LoadedModel, out: Path) -> Path:
    """Write ``loaded`` as ONNX (opset 17, dynamic batch axis) to ``out``.

    When ``out`` is the model's own folder file (``model.onnx``), the card records its sha256.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(2, *loaded.card.input_shape)
    torch.onnx.export(
        loaded.module,
        (dummy,),
        str(out),
        input_names=["image"],
        output_names=["logits"],
        opset_version=OPSET,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,  # the TorchScript exporter: no onnxscript optimiser pass needed, stable names
    )
    if out.resolve() == (loaded.path / ONNX_FILE).resolve():
        loaded.card.onnx_sha256 = sha256_file(out)
        loaded.card.save(loaded.path)
    return out


def onnx_logits(path: Path, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits of an exported model under onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [
        session.run(["logits"], {"image": x[i : i + batch_size].astype(np.float32)})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs)


def check_parity(loaded: LoadedModel, path: Path, x: torch.Tensor) -> Parity:
    """Compare torch and onnxruntime logits on inputs ``x`` (float pixels in [0, 1])."""
    with torch.no_grad():
        expected = loaded.module(x).numpy()
    got = onnx_logits(path, x.numpy())
    return Parity(
        max_abs_diff=float(np.abs(expected - got).max()),
        same_argmax=float((expected.argmax(1) == got.argmax(1)).mean()),
        n=len(x),
    )
