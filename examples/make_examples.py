"""Write the example images shipped in examples/ from the Fashion-MNIST test set.

Usage: python examples/make_examples.py [DATA_DIR]   (default: $GGA_DATA_DIR)
"""

import sys
from pathlib import Path

from models.data import load_dataset
from models.imaging import encode_png

# file name -> Fashion-MNIST class index; the first test image of each class is written.
EXAMPLES = {"shoe.png": 9, "trouser.png": 1, "bag.png": 8, "shirt.png": 6}


def main(data_dir: str | None = None) -> None:
    test = load_dataset("fashion-mnist", "test", data_dir=data_dir, limit=100)
    x = test.float()
    out = Path(__file__).parent
    for name, label in EXAMPLES.items():
        index = int((test.y == label).nonzero()[0])
        (out / name).write_bytes(encode_png(x[index]))
        sys.stdout.write(f"{out / name}: test image {index}, {test.class_names[label]}\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
