"""What is classified: architectures, data readers, training, model folders and ONNX export.

Plain PyTorch; nothing here imports ``service``, ``detectors`` or (outside ``models.train``)
``attacks``.
"""
