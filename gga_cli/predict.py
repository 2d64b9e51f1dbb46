"""``gga predict MODEL IMAGE...``: classify image files offline, with the served trust score.

The same pipeline as the service (gradient engine + the model's fitted detector), so each image
gets the label, the probabilities, the trust score and the flag a request to ``gga serve`` gets.
"""

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

    from detectors.pipeline import load_pipeline
    from models.imaging import load_image_file

    loaded = ModelRepository(args.repo).load(args.model)
    card = loaded.card
    pipeline = load_pipeline(loaded.path, loaded.module, card.weights_sha256)
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
    out = pipeline(x)
    probs = torch.from_numpy(out.probabilities)
    results = []
    for i, (path, p) in enumerate(zip(args.images, probs, strict=True)):
        label = int(out.labels[i])
        results.append(
            {
                "image": str(path),
                "label": label,
                "class_name": card.class_names[label],
                "probabilities": [round(float(v), 6) for v in p],
                "trust_score": round(float(out.trust[i]), 6),
                "flagged": bool(out.flagged[i]),
            }
        )
    if args.json:
        document = {"model": card.name, "alpha": pipeline.alpha, "predictions": results}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    for r, p in zip(results, probs, strict=True):
        top = torch.topk(p, min(args.top, len(p)))
        alternatives = ", ".join(
            f"{card.class_names[int(i)]} {100 * float(v):.1f}%"
            for v, i in zip(top.values, top.indices, strict=True)
        )
        verdict = "FLAGGED untrusted" if r["flagged"] else "trusted"
        sys.stdout.write(
            f"{r['image']}: {r['class_name']} ({alternatives}); trust {r['trust_score']:.3f} "
            f"({verdict}, alpha {pipeline.alpha:g})\n"
        )
    return 0
