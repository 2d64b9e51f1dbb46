"""ONNX files as users have them, imported with ``gga import``'s code and compared with onnxruntime
running the original file: torch 2.13's two exporters at opsets 17 to 21 (ResNet-18, a
MobileNet-style net, a GELU patch net), graphs written the way other converters write them, and
each operator form gga-serve converts itself (models/imported/onnx_converters.py)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from detectors.engine import EngineOptions, GradientEngine
from detectors.strategies import STRATEGIES
from gga_cli import main
from models.imported.errors import ModelImportError
from models.imported.importer import ImportOptions, import_model
from models.imported.onnx_graph import NORMALISATION_KEY, convert_onnx
from models.imported.onnx_parity import PARITY_ATOL
from models.repository import ModelRepository
from tests.helpers.imported import (
    MobileNetStyle,
    PatchGeluNet,
    ResNet18,
    as_torchvision_initialises,
    export_onnx,
    foreign_graph,
    with_batchnorm_statistics,
)

SMALL = (3, 64, 64)  # where a test needs the graph's shape, not ImageNet's input
NETWORKS = {
    "resnet18": lambda: ResNet18(num_classes=10, width=16),
    "mobilenet": lambda: MobileNetStyle(num_classes=10, width=16),
    "patch-gelu": lambda: PatchGeluNet(num_classes=10),
}
# Every exporter at every opset asked of it; the dynamo exporter writes opset 18 when asked for
# 17, and ONNX Gelu (the patch net's GELU) exists from opset 20.
EXPORTS = [
    (network, exporter, opset)
    for network in ("resnet18", "mobilenet")
    for exporter in ("dynamo", "legacy")
    for opset in (17, 18, 20, 21)
] + [("patch-gelu", exporter, opset) for exporter in ("dynamo", "legacy") for opset in (20, 21)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: torch's thread pool would only fight
    yield
    torch.set_num_threads(before)


def _network(name: str) -> torch.nn.Module:
    """The network ``name``, seeded, with BatchNorm statistics of its own activations."""
    torch.manual_seed(0)
    return with_batchnorm_statistics(NETWORKS[name](), SMALL)


def _ops(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


def _assert_faithful(card, what: str) -> None:
    parity = card.config["onnx"]["parity"]
    print(f"{what}: max |logit diff| {parity['max_abs_diff']:.2e} on {parity['inputs']} inputs")
    assert parity["max_abs_diff"] <= PARITY_ATOL and parity["same_argmax"] == 1.0, parity


@pytest.mark.parametrize(
    ("exporter", "num_classes"),
    [("dynamo-default", 1000), ("legacy", 10)],
    ids=["dynamo", "legacy"],
)
def test_a_resnet18_at_224_from_either_torch_exporter_imports_with_gga_import(
    exporter, num_classes, tmp_path
):
    shape = (3, 224, 224)
    torch.manual_seed(0)
    model = as_torchvision_initialises(ResNet18(num_classes))  # untrained, as in the report
    path = export_onnx(model, tmp_path / "resnet18.onnx", shape, exporter)
    exported = onnx.load(path, load_external_data=False)
    if exporter == "dynamo-default":  # the report's file: opset 20, batch 1, weights beside it
        assert exported.opset_import[0].version == 20
        assert {"ReduceMean", "Reshape"} <= _ops(exported)
        assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
        assert (tmp_path / "resnet18.onnx.data").is_file()
    else:  # the report's other file: weights behind Identity nodes (onnx2torch: KeyError)
        assert "Identity" in _ops(exported)

    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(["import", str(path), "--name", "resnet18", "--repo", str(repo)]) == 0
    card = ModelRepository(repo).card("resnet18")
    _assert_faithful(card, f"ResNet-18 224x224, {exporter}")
    normalised = card.config["onnx"]["normalisation"]
    if exporter == "dynamo-default":
        assert normalised["reshapes_batch_freed"] == 1
        assert card.config["onnx"]["external_data"]["files"] == ["resnet18.onnx.data"]
    else:
        assert normalised["identities_removed"] > 0
    assert card.config["features"] is not None  # the linear head is found behind the reshape
    # One file, weights inside: the folder serves without the export's data file beside it.
    assert sorted(p.name for p in (repo / "resnet18").iterdir()) == ["card.json", "model.onnx"]
    loaded = ModelRepository(repo).load("resnet18")
    x = torch.rand(3, *shape)  # a batch of 3 from a file exported for batches of 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x), atol=1e-4, rtol=1e-4)


def test_an_export_without_its_external_data_file_is_refused_by_name(tmp_path):
    path = export_onnx(_network("mobilenet"), tmp_path / "m.onnx", SMALL, "dynamo")
    (tmp_path / "m.onnx.data").rename(tmp_path / "elsewhere.data")
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(ModelImportError, match=r"m\.onnx\.data, which should be beside it"):
        import_model(path, repo, ImportOptions(name="m"))
    assert list(repo.iterdir()) == []


@pytest.mark.parametrize(("network", "exporter", "opset"), EXPORTS)
def test_torch_exports_at_each_opset_import_and_match_onnxruntime(
    network, exporter, opset, tmp_path
):
    model = _network(network)
    path = export_onnx(model, tmp_path / "model.onnx", SMALL, exporter, opset)
    written = onnx.load(path, load_external_data=False).opset_import[0].version
    card = import_model(path, tmp_path / "repo", ImportOptions(name="m"))
    _assert_faithful(card, f"{network}, {exporter}, opset {opset} (file: {written})")
    assert card.config["features"] is not None
    loaded = ModelRepository(tmp_path / "repo").load("m")
    x = torch.rand(5, *SMALL)  # another batch size than the export's 2
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def fixed_batch_net(tmp_path_factory):
    """The GELU patch net exported as the report's file was (batch 1 fixed into its Reshape
    targets) and imported, with the net it came from.

    A smooth network: in a ReLU network, float32 rounding (the file folds BatchNorm into its
    convs) can move a pre-activation of 1e-6 across zero and switch off a unit, which rightly
    changes the input gradient by a few percent; GELU's gradient moves by rounding only.
    """
    model = _network("patch-gelu")
    folder = tmp_path_factory.mktemp("fixed-batch")
    path = export_onnx(model, folder / "net.onnx", SMALL, "dynamo-default")
    card = import_model(path, folder / "repo", ImportOptions(name="n"))
    assert card.config["onnx"]["normalisation"]["reshapes_batch_freed"] >= 1
    return ModelRepository(folder / "repo").load("n").module, model


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_fixed_batch_export_gives_the_engine_the_originals_gradients(strategy, fixed_batch_net):
    imported, original = fixed_batch_net
    x = torch.rand(4, *SMALL, generator=torch.Generator().manual_seed(3))
    # Unsigned maps: the sign of a gradient entry that is all but zero is rounding's to pick.
    options = EngineOptions(strategy=strategy, sign=False)
    ours, theirs = GradientEngine(imported, options)(x), GradientEngine(original, options)(x)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.saliency, theirs.saliency, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(ours.csm, theirs.csm, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("opset", "pool", "head"),
    [
        (8, "gap", "gemm"),
        (11, "mean", "matmul"),
        (13, "gap", "matmul"),
        (17, "mean", "gemm"),
        (18, "mean", "matmul"),
        (21, "gap", "gemm"),
    ],
)
def test_a_graph_written_by_another_converter_imports(opset, pool, head, tmp_path):
    path = tmp_path / "foreign.onnx"
    onnx.save(foreign_graph(opset, pool, head), path)
    card = import_model(path, tmp_path / "repo", ImportOptions(name="f"))
    _assert_faithful(card, f"foreign graph, opset {opset}, {pool}, {head}")
    normalised = card.config["onnx"]["normalisation"]
    assert normalised["identities_removed"] == 3
    if opset == 8:  # BatchNormalization-7, Gemm-7...: converted up to the forms onnx2torch has
        assert normalised["converted_to_opset"] == 17
    assert (card.config["features"] is not None) == (head == "gemm")  # MatMul + Add is no Linear


def _single_node(op_type, opset, x_shape, constants=(), extra_inputs=(), **attributes):
    """A graph of one node on input ``x`` (and ``extra_inputs``), constants as initializers."""
    names = ["x", *(name for name, _ in extra_inputs)]
    weights = []
    for i, value in enumerate(constants):
        if value is None:
            names.append("")  # an optional input left out
        else:
            weights.append(numpy_helper.from_array(np.asarray(value), f"c{i}"))
            names.append(f"c{i}")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    inputs += [helper.make_tensor_value_info(n, t, s) for n, (t, s) in extra_inputs]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, ["y"], **attributes)],
        op_type,
        inputs,
        [helper.make_empty_tensor_value_info("y")],
        weights,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    (typed,) = onnx.shape_inference.infer_shapes(model).graph.value_info  # the output, typed
    if not typed.type.tensor_type.HasField("shape"):  # axes known only when run: rank of x
        typed = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))
    model.graph.output[0].CopyFrom(typed)
    return model


X = (2, 4, 7, 7)
AXES = ("axes", (TensorProto.INT64, [2]))
NO_AXES = np.array([], np.int64)
CONV_WEIGHT = np.random.default_rng(0).normal(size=(8, 2, 3, 3)).astype(np.float32)
SCALE, BIAS = np.full(4, 1.5, np.float32), np.full(4, 0.1, np.float32)
DILATED = {"dilations": [1, 2], "pads": [1, 2, 1, 2]}
CONVERTER_CASES = {
    "ReduceMean-18": ("ReduceMean", 18, X, [np.array([2, 3])], {}),
    "ReduceMean-18 all axes": ("ReduceMean", 18, X, [], {"keepdims": 0}),
    "ReduceMean-18 noop": ("ReduceMean", 18, X, [NO_AXES], {"noop_with_empty_axes": 1}),
    "ReduceMax-18": ("ReduceMax", 18, X, [np.array([1])], {"keepdims": 0}),
    "ReduceMin-20": ("ReduceMin", 20, X, [np.array([-1, 1])], {}),
    "ReduceProd-18": ("ReduceProd", 18, X, [np.array([1, 3])], {"keepdims": 0}),
    "ReduceL1-18": ("ReduceL1", 18, X, [np.array([2])], {}),
    "ReduceL2-18": ("ReduceL2", 18, X, [np.array([2, 3])], {}),
    "ReduceSumSquare-18": ("ReduceSumSquare", 18, X, [np.array([1])], {}),
    "ReduceLogSum-18": ("ReduceLogSum", 18, X, [np.array([3])], {"keepdims": 0}),
    "ReduceLogSumExp-18": ("ReduceLogSumExp", 18, X, [np.array([1, 2])], {}),
    "Gelu-20": ("Gelu", 20, X, [], {}),
    "Gelu-20 tanh": ("Gelu", 20, X, [], {"approximate": "tanh"}),
    "GlobalMaxPool-1": ("GlobalMaxPool", 13, X, [], {}),
    "GlobalMaxPool-22": ("GlobalMaxPool", 22, X, [], {}),
    "AveragePool-19": (
        "AveragePool", 19, X, [], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}
    ),
    "AveragePool-22 ceil": (
        "AveragePool", 22, X, [], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}
    ),
    "Pad-18": ("Pad", 18, X, [np.array([0, 0, 1, 2, 0, 0, 2, 1]), np.array(0.5, np.float32)], {}),
    "Pad-19 reflect": ("Pad", 19, X, [np.array([0, 0, 1, 1, 0, 0, 1, 1])], {"mode": "reflect"}),
    "Pad-21 edge": ("Pad", 21, X, [np.array([0, 0, 2, 0, 0, 0, 0, 2])], {"mode": "edge"}),
    "Cast-19": ("Cast", 19, X, [], {"to": TensorProto.INT64}),
    "Conv-22": ("Conv", 22, X, [CONV_WEIGHT], {"group": 2, "strides": [2, 2], **DILATED}),
    "MaxPool-22 ceil": (
        "MaxPool", 22, X, [], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}
    ),
    "GlobalAveragePool-22": ("GlobalAveragePool", 22, X, [], {}),
    "Flatten-21": ("Flatten", 21, X, [], {"axis": 2}),
    "Reshape-21 allowzero": ("Reshape", 21, X, [np.array([2, -1, 7])], {"allowzero": 1}),
    "Transpose-21": ("Transpose", 21, X, [], {"perm": [0, 2, 3, 1]}),
    "Unsqueeze-21": ("Unsqueeze", 21, X, [np.array([1])], {}),
    "Squeeze-23": ("Squeeze", 23, (2, 1, 7, 7), [np.array([1])], {}),
    "HardSwish-22": ("HardSwish", 22, X, [], {}),
    "HardSigmoid-22": ("HardSigmoid", 22, X, [], {"alpha": 0.3, "beta": 0.4}),
    "Elu-22": ("Elu", 22, X, [], {"alpha": 0.7}),
    "Softplus-22": ("Softplus", 22, X, [], {}),
    "InstanceNormalization-22": ("InstanceNormalization", 22, X, [SCALE, BIAS], {}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CONVERTER_CASES))
def test_each_operator_form_we_convert_matches_onnxruntime(case, tmp_path):
    op_type, opset, x_shape, constants, attributes = CONVERTER_CASES[case]
    path = tmp_path / "node.onnx"
    onnx.save(_single_node(op_type, opset, x_shape, constants, **attributes), path)
    module = convert_onnx(path)
    # Converted at the file's own opset: by our converter, not after a version conversion.
    assert module.meta[NORMALISATION_KEY]["converted_to_opset"] is None
    x = np.random.default_rng(1).normal(size=x_shape).astype(np.float32)
    if op_type == "ReduceLogSum":
        x = np.abs(x) + 0.1
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_reduce_axes_computed_by_the_graph_are_read_at_each_call(tmp_path):
    path = tmp_path / "node.onnx"
    onnx.save(_single_node("ReduceMax", 18, X, extra_inputs=[AXES], keepdims=1), path)
    module = convert_onnx(path)
    x = np.random.default_rng(2).normal(size=X).astype(np.float32)
    session = ort.InferenceSession(str(path))
    for axes in ([1, 2], [3, -3]):
        axes = np.array(axes, np.int64)
        with torch.no_grad():
            got = module(torch.from_numpy(x), torch.from_numpy(axes)).numpy()
        np.testing.assert_allclose(got, session.run(None, {"x": x, "axes": axes})[0])


@pytest.mark.parametrize(
    ("node", "named"),
    [
        (
            ("AveragePool", 19, X, [], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
            "AveragePool with dilations",
        ),
        (("Pad", 18, X, [np.array([1, 1]), None, np.array([2])], {}), "Pad with an axes input"),
        (("Pad", 19, X, [np.array([0, 0, 1, 1, 0, 0, 1, 1])], {"mode": "wrap"}), "mode 'wrap'"),
    ],
    ids=["AveragePool-dilations", "Pad-axes", "Pad-wrap"],
)
def test_an_operator_form_no_converter_takes_is_named(node, named, tmp_path):
    op_type, opset, x_shape, constants, attributes = node
    path = tmp_path / "node.onnx"
    onnx.save(_single_node(op_type, opset, x_shape, constants, **attributes), path)
    with pytest.raises(ModelImportError, match="failed to convert") as err:
        convert_onnx(path)
    assert named in str(err.value)
