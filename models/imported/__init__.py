"""Classifiers a user brings as a file: ONNX, torch.export (``.pt2``) and TorchScript (``.pt``).

- ``formats``: tell the formats apart by their bytes, refuse pickles, read a file into a module;
- ``onnx_graph``: reading ONNX files, their input shapes, conversion for autograd (onnx2torch);
- ``onnx_normalise``: the graph made plain before conversion (Identity nodes, constants, batch);
- ``onnx_converters``: our converters for the operator forms onnx2torch lacks (opset 18 on);
- ``onnx_parity``: the converted graph against onnxruntime on the original file;
- ``features``: find or cut the penultimate features of a traced graph;
- ``module``: ``ImportedClassifier``, the wrapper the engine and the service run;
- ``checks``: what an import verifies (eval mode, batch independence, outputs, labels);
- ``importer``: ``import_model``, which writes the model folder; ``loader`` reads it back.
"""

from models.imported.errors import ModelImportError
from models.imported.formats import FORMATS, detect_format

__all__ = ["FORMATS", "ModelImportError", "detect_format"]
