"""Draw examples/ship.jpg: a 192x144 colour 'photo' of a ship at sea, made here (no licence
needed), for the README's curl of a colour model. Deterministic (seeded noise).

Usage: python examples/make_ship.py
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 192, 144


def draw_ship(seed: int = 14) -> Image.Image:
    """Sky and sea gradients, a liner with cabins and a funnel, its reflection, sensor noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, HEIGHT)[:, None, None]
    img = np.broadcast_to(
        np.array([110, 160, 225]) * (1 - rows) + np.array([200, 220, 240]) * rows,
        (HEIGHT, WIDTH, 3),
    ).copy()
    horizon = int(HEIGHT * 0.55)
    depth = np.linspace(0, 1, HEIGHT - horizon)[:, None, None]
    sea = np.array([40, 90, 140]) * (1 - depth) + np.array([20, 60, 100]) * depth
    img[horizon:] = np.broadcast_to(sea, (HEIGHT - horizon, WIDTH, 3))
    for row in range(horizon, HEIGHT, 3):  # waves
        img[row] += rng.normal(0, 12, (WIDTH, 1))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.polygon([(38, 92), (160, 92), (148, 110), (50, 110)], fill=(150, 30, 30))  # hull
    d.rectangle([38, 88, 160, 93], fill=(235, 235, 235))  # deck
    d.rectangle([70, 70, 130, 88], fill=(240, 240, 235))  # cabins
    d.rectangle([85, 58, 118, 70], fill=(230, 230, 225))
    for x0 in range(74, 128, 8):  # windows
        d.rectangle([x0, 75, x0 + 4, 79], fill=(40, 50, 70))
    d.rectangle([100, 44, 110, 58], fill=(30, 30, 30))  # funnel
    d.rectangle([100, 44, 110, 48], fill=(200, 160, 40))
    arr = np.asarray(im).astype(float)
    arr[111:118, 50:148] = arr[111:118, 50:148] * 0.7 + np.array([110, 30, 30]) * 0.3
    arr += rng.normal(0, 4, arr.shape)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return im.filter(ImageFilter.GaussianBlur(0.8))


def main() -> None:
    out = Path(__file__).parent / "ship.jpg"
    draw_ship().save(out, quality=88)
    sys.stdout.write(f"{out}: {WIDTH}x{HEIGHT} JPEG\n")


if __name__ == "__main__":
    main()
