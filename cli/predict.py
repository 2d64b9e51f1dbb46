"""``gga predict MODEL IMAGE...``: classify image files from the command line."""

import argparse
import json
import sys
from pathlib import Path

from models.repository import ModelRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="classify PNG/JPEG files with a model")
    p.add_argument("model", help="model name in the repository")
    p.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    p.add_argument("--repo", help="model repository folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--top", type=int, default=3, help="classes shown per image in the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.imaging import load_image_file

    loaded = ModelRepository(args.repo).load(args.model)
    card = loaded.card
    x = torch.stack(
        [
            load_image_file(
                path,
                input_shape=card.input_shape,
                resize=card.preprocessing.resize,
                resize_mode=card.preprocessing.resize_mode,
            )
            for path in args.images
        ]
    )
    with torch.no_grad():
        probs = torch.softmax(loaded.module(x), dim=1)
    results = []
    for path, p in zip(args.images, probs, strict=True):
        label = int(p.argmax())
        results.append(
            {
                "image": str(path),
                "label": label,
                "class_name": card.class_names[label],
                "probabilities": [round(float(v), 6) for v in p],
            }
        )
    if args.json:
        sys.stdout.write(json.dumps({"model": card.name, "predictions": results}, indent=2) + "\n")
        return 0
    for r, p in zip(results, probs, strict=True):
        top = torch.topk(p, min(args.top, len(p)))
        alternatives = ", ".join(
            f"{card.class_names[int(i)]} {100 * float(v):.1f}%"
            for v, i in zip(top.values, top.indices, strict=True)
        )
        sys.stdout.write(f"{r['image']}: {r['class_name']} ({alternatives})\n")
    return 0
