"""How it is served: the FastAPI app, both protocols, the batcher, the store, metrics, the CLI.

The top layer: it composes ``models`` and ``detectors``; nothing imports ``service``.
"""
