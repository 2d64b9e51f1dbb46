"""Write one torch module in each of the three formats ``gga import`` reads.

What a user does before importing, done for them: the benchmark of imported against native
engines (``gga bench imported``) and the import tests build their files with it.
"""

from pathlib import Path
from typing import Literal

import torch
from torch import nn

FORMAT_FILES = {"onnx": "model.onnx", "torch-export": "model.pt2", "torchscript": "model.pt"}


def export_three_ways(
    model: nn.Module,
    folder: Path,
    input_shape: tuple[int, int, int],
    torchscript: Literal["script", "trace"] = "script",
) -> dict[str, Path]:
    """``model`` (eval mode) as ONNX (opset 17), torch.export and TorchScript files.

    Every file takes any batch size. ``torchscript="trace"`` records the ops run on an example
    instead of compiling the code: the zoo's classes have a ``head`` property TorchScript cannot
    compile.

    Returns:
        The path of each format's file in ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, *input_shape)
    paths = {fmt: folder / name for fmt, name in FORMAT_FILES.items()}
    torch.onnx.export(
        model,
        (example,),
        str(paths["onnx"]),
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(paths["torch-export"]))
    scripted = (
        torch.jit.script(model) if torchscript == "script" else torch.jit.trace(model, example)
    )
    torch.jit.save(scripted, str(paths["torchscript"]))
    return paths
