"""What is classified: architectures, model cards and folders, imported models, data readers,
image decoding and ONNX export.

The bottom layer: plain PyTorch, importing none of the project's other packages.
"""
