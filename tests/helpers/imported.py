"""Networks the imported-model tests import, and the files users make of them.

- A small conv net with BatchNorm, trained briefly on real images and exported three ways: the
  tests import it as ONNX, torch.export and TorchScript and compare each with the module.
- Networks as users export them to ONNX with torch 2.13 (ResNet-18, a MobileNet-style net, a
  GELU patch net; ``export_onnx`` with either exporter), and ``foreign_graph``: a classifier
  written the way other converters write ONNX, operator by operator, for any opset.
"""

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.data import Dataset
from models.imaging import encode_png

INPUT_SHAPE = (1, 28, 28)
MEAN, STD = 0.286, 0.353  # Fashion-MNIST's, applied by the card (the graph takes normalised input)


class SmallBNNet(nn.Module):
    """Conv-BN-ReLU-pool twice, then two dense layers with dropout between (all eval-sensitive)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)  # (B, 16*7*7)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))  # (B, num_classes)


class PixelNet(nn.Module):
    """The trained graph behind the card's normalisation, as the service runs it natively."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - MEAN) / STD)


def train_small_bn_net(train: Dataset, steps: int = 150, seed: int = 0) -> SmallBNNet:
    """A ``SmallBNNet`` trained for ``steps`` Adam steps on normalised images, in eval mode."""
    torch.manual_seed(seed)
    model = SmallBNNet(len(train.class_names)).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = (train.float() - MEAN) / STD, train.y
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def safe_names(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """Class names usable as folder names ("T-shirt/top" has a slash)."""
    return tuple(n.replace("/", "-") for n in class_names)


def write_image_folder(data: Dataset, folder: Path) -> Path:
    """``data`` as ``folder/<class>/<i>.png``, class folders named by ``safe_names``."""
    names = safe_names(data.class_names)
    x = data.float()
    for i, label in enumerate(data.y.tolist()):
        target = folder / names[label]
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{i:05d}.png").write_bytes(encode_png(x[i]))
    return folder


# --- Networks as users export them to ONNX (tests/models/test_onnx_exports.py) ---------------


class BasicBlock(nn.Module):
    """ResNet's two 3x3 conv-BN layers with a shortcut (a 1x1 conv-BN where the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (7x7 stem, max pool, 2-2-2-2 basic blocks, average pool,
    linear head) without torchvision; ``width`` 64 is the real network, less keeps its graph."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks, channels = [], width
        for scale, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            blocks += [
                BasicBlock(channels, width * scale, stride),
                BasicBlock(width * scale, width * scale, 1),
            ]
            channels = width * scale
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x)))  # (B, 8 * width, 1, 1)
        return self.fc(torch.flatten(x, 1))  # (B, num_classes)


def _conv_bn_relu6(in_channels: int, channels: int, kernel: int, stride: int, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU6(inplace=True),
    )


class DepthwiseSeparable(nn.Module):
    """A depthwise 3x3 then a pointwise 1x1 conv, each BN-ReLU6; a shortcut where shapes allow."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = _conv_bn_relu6(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = _conv_bn_relu6(in_channels, channels, 1, 1)
        self.residual = stride == 1 and in_channels == channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


class MobileNetStyle(nn.Module):
    """MobileNet's shape: a strided stem, depthwise-separable blocks with ReLU6, global average
    pool, dropout and a linear head; flattened with ``view(x.size(0), -1)``, as many codes do."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        plan = [(width, 2 * width, 1), (2 * width, 4 * width, 2), (4 * width, 4 * width, 1)]
        plan += [(4 * width, 8 * width, 2), (8 * width, 8 * width, 1)]
        self.stem = _conv_bn_relu6(3, width, 3, 2)
        self.blocks = nn.Sequential(*(DepthwiseSeparable(i, o, s) for i, o, s in plan))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))  # (B, 8 * width, 1, 1)
        return self.fc(self.dropout(x.view(x.size(0), -1)))  # (B, num_classes)


class PatchGeluNet(nn.Module):
    """A patch embedding, a LayerNorm-GELU MLP block and mean pooling: what ViT-like exports
    hold (the dynamo exporter writes ONNX Gelu from opset 20, which no older form expresses)."""

    def __init__(self, num_classes: int = 10, channels: int = 32, patch: int = 8) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, channels, patch, patch)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels)
        )
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)  # (B, patches, channels)
        x = x + self.mlp(self.norm(x))
        return self.fc(x.mean(1))  # (B, num_classes)


@torch.no_grad()
def with_batchnorm_statistics(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0):
    """``model`` in eval mode with BatchNorm statistics of its own activations and random affine
    weights, as a trained network has: its logits then have a trained network's scale, and a
    conversion error is not hidden in tiny numbers (fresh statistics shrink each layer's output).
    """
    torch.manual_seed(seed)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the batches seen
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.normal_(bn.bias, 0.0, 0.2)
    model.train()
    model(torch.rand(8, *input_shape))
    return model.eval()


def as_torchvision_initialises(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, freshly initialised as torchvision initialises its ResNets: what a
    user exports untrained ("random weights"). He-normal convolutions keep the activations' scale
    through the layers (torch's default initialisation shrinks it), and every BatchNorm is still
    the identity, so each folded bias is zero: torch's legacy exporter then writes one zero
    tensor and an Identity node for each of its uses."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model.eval()


def export_onnx(
    model: nn.Module,
    path: Path,
    input_shape: tuple[int, int, int],
    exporter: str,
    opset: int | None = None,
) -> Path:
    """``model`` exported to ONNX the way a user does with torch 2.13.

    Args:
        exporter: ``"dynamo"`` (torch's default exporter) with a dynamic batch, ``"legacy"``
            (``dynamo=False``, the TorchScript-based one) with a dynamic batch, or
            ``"dynamo-default"``: ``torch.onnx.export(model, (x,), path)`` and nothing more
            (batch fixed at 1, opset 20, weights in ``<path>.data``).
        opset: the opset asked for (the exporter's default where ``None``).
    """
    opset_args = {} if opset is None else {"opset_version": opset}
    if exporter == "dynamo-default":
        torch.onnx.export(model, (torch.rand(1, *input_shape),), str(path), **opset_args)
    elif exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(
            model,
            (torch.rand(2, *input_shape),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            **opset_args,
        )
    elif exporter == "legacy":
        torch.onnx.export(
            model,
            (torch.rand(2, *input_shape),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
            **opset_args,
        )
    else:
        raise ValueError(f"unknown exporter {exporter!r}")
    return path


class _GraphWriter:
    """Nodes and weights of a hand-written ONNX graph, each output with a fresh name."""

    def __init__(self, opset: int, seed: int) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []

    def node(self, op_type: str, inputs: list[str], **attributes) -> str:
        output = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def weight(self, array: np.ndarray, through_identity: bool = False) -> str:
        name = f"w{len(self.weights)}"
        self.weights.append(numpy_helper.from_array(array, name))
        return self.node("Identity", [name]) if through_identity else name

    def constant(self, values: list, dtype=np.int64) -> str:
        tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype))
        return self.node("Constant", [], value=tensor)

    def conv_bn(self, x: str, cin: int, cout: int, kernel: int, stride: int, groups: int = 1):
        fan_in = cin // groups * kernel * kernel
        w = self.rng.normal(0, (2 / fan_in) ** 0.5, (cout, cin // groups, kernel, kernel))
        # Conv weights reach the node through Identity, as torch's legacy exporter writes
        # shared constants.
        y = self.node(
            "Conv",
            [x, self.weight(w.astype(np.float32), through_identity=True)],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[kernel // 2 * (stride == 1)] * 4,
            group=groups,
        )
        stats = [
            self.rng.uniform(0.5, 1.5, cout),  # scale
            self.rng.normal(0, 0.2, cout),  # bias
            self.rng.normal(0, 0.2, cout),  # running mean
            self.rng.uniform(0.5, 1.5, cout),  # running variance
        ]
        return self.node(
            "BatchNormalization", [y, *(self.weight(s.astype(np.float32)) for s in stats)]
        )

    def relu6(self, x: str) -> str:
        if self.opset < 11:
            return self.node("Clip", [x], min=0.0, max=6.0)
        bounds = [self.constant(v, np.float32) for v in (0.0, 6.0)]
        return self.node("Clip", [x, *bounds])


def foreign_graph(opset: int, pool: str, head: str, seed: int = 0) -> onnx.ModelProto:
    """A MobileNet-like classifier of (N, 3, 32, 32) images written as other converters write
    ONNX (tf2onnx, keras2onnx, older torch), in the operator forms of ``opset``.

    It has what those files hold and torch's exporters rarely write: an explicit asymmetric Pad
    before a strided conv (TensorFlow's "SAME"), BatchNormalization left unfused, weights behind
    Identity nodes and listed as graph inputs too, ReLU6 as Clip with Constant bounds, a
    depthwise conv, a residual Add, and a head of dropout then Gemm or MatMul on a transposed
    weight plus a bias.

    Args:
        pool: ``"gap"`` (GlobalAveragePool then Flatten) or ``"mean"`` (ReduceMean over H, W).
        head: ``"gemm"``, or ``"matmul"`` after a Reshape whose target the graph computes from
            its input's shape (Shape, Gather, Unsqueeze, Concat).
    """
    g = _GraphWriter(opset, seed)
    if opset < 11:
        x = g.node("Pad", ["image"], pads=[0, 0, 0, 0, 0, 0, 1, 1])
    else:
        x = g.node("Pad", ["image", g.constant([0, 0, 0, 0, 0, 0, 1, 1])])
    x = g.relu6(g.conv_bn(x, 3, 16, 3, 2))  # (N, 16, 16, 16)
    y = g.relu6(g.conv_bn(x, 16, 16, 3, 1, groups=16))
    x = g.node("Relu", [g.node("Add", [x, g.conv_bn(y, 16, 16, 1, 1)])])
    if pool == "gap":
        x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    elif opset < 18:
        x = g.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    else:
        x = g.node("ReduceMean", [x, g.constant([2, 3])], keepdims=0)
    x = g.node("Dropout", [x])  # inference: passes its input through
    w = g.rng.normal(0, 0.25, (10, 16)).astype(np.float32)
    b = g.rng.normal(0, 0.1, 10).astype(np.float32)
    if head == "gemm":
        x = g.node("Gemm", [x, g.weight(w), g.weight(b)], transB=1)
    else:
        n = g.node("Gather", [g.node("Shape", [x]), g.constant(0)], axis=0)
        if opset < 13:
            n = g.node("Unsqueeze", [n], axes=[0])
        else:
            n = g.node("Unsqueeze", [n, g.constant([0])])
        x = g.node("Reshape", [x, g.node("Concat", [n, g.constant([-1])], axis=0)])
        x = g.node("MatMul", [x, g.node("Transpose", [g.weight(w)], perm=[1, 0])])
        x = g.node("Add", [x, g.weight(b)])
    g.nodes[-1].output[0] = "logits"
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in g.weights]
    graph = helper.make_graph(
        g.nodes,
        "foreign",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        g.weights,
    )
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
