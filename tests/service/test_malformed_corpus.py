"""1,000 malformed requests on SQLite and PostgreSQL, keys off and on: every one answered 4xx,
none 5xx.

The corpus is generated from a fixed seed (reproducible): truncated and bit-flipped PNG and JPEG
files, images declaring giant dimensions, wrong content types, broken JSON and base64, bad tensor
values, malformed v2 requests and binary tensor framing, over-long ids and headers, and malformed
feedback (single and batch) on a stored prediction, an unknown one and absurd ids.
"""

import base64
import io
import json
import random
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.auth import create_key
from service.settings import Settings
from service.store import Database

MODEL = "fashion-mnist-cnn"
V1 = f"/v1/models/{MODEL}/predict"
V2 = f"/v2/models/{MODEL}/infer"
FEEDBACK_BATCH = "/v1/predictions/feedback"
CORPUS_SIZE = 1000


def _png(rng: random.Random, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    side = rng.choice([14, 28, 40])
    pixels = np.asarray([rng.randrange(256) for _ in range(side * side)], dtype=np.uint8)
    image = Image.fromarray(pixels.reshape(side, side), mode="L").convert(mode)
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(rng: random.Random) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3))).save(buf, "JPEG")
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _jpeg_declaring(width: int, height: int, rng: random.Random) -> bytes:
    data = bytearray(_jpeg(rng))
    at = data.find(b"\xff\xc0")  # start of frame: precision, then height and width
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _files(blobs: list[bytes], kind: str = "image/png") -> dict:
    return {"files": [("file", (f"{i}.img", b, kind)) for i, b in enumerate(blobs)]}


def _v2(rng: random.Random) -> dict:
    """A malformed v2 inference request (JSON or binary framing)."""
    good = [0.5] * 784
    choice = rng.randrange(9)
    if choice == 0:
        return {"json": {"inputs": [{"name": "image", "shape": [1, 28, 27], "datatype": "FP32",
                                     "data": good}]}}  # fmt: skip
    if choice == 1:
        return {"json": {"inputs": [{"name": "image", "shape": [1, -28, 28], "datatype": "FP32",
                                     "data": good}]}}  # fmt: skip
    if choice == 2:
        value = rng.choice(["nan", "x", None, True, [1], {"a": 1}, 1e400, -3.0, 7])
        data = [value, *good[1:]]
        text = json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                       "data": data}]})  # fmt: skip
        return {"content": text.encode(), "headers": {"content-type": "application/json"}}
    if choice == 3:
        return {"json": {"inputs": [{"name": "image", "shape": [1, 28, 28],
                                     "datatype": rng.choice(["INT8", "BYTES", "FP128", ""]),
                                     "data": good}]}}  # fmt: skip
    if choice == 4:
        header = json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                         "parameters": {"binary_data_size": rng.choice(
                                             [0, 100, 3136 * 2, -1, "x"])}}]}).encode()  # fmt: skip
        tail = np.full(784, 0.5, np.float32).tobytes()[: rng.randrange(3136)]
        length = rng.choice([str(len(header)), "-5", "abc", str(len(header) + 10**9)])
        return {"content": header + tail,
                "headers": {"Inference-Header-Content-Length": length}}  # fmt: skip
    if choice == 5:
        return {"json": {"id": "i" * rng.randint(65, 5000),
                         "inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                     "data": good}]}}  # fmt: skip
    if choice == 6:
        body = json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                       "data": good}]})  # fmt: skip
        return {"content": body[: rng.randrange(1, len(body) - 1)].encode(),
                "headers": {"content-type": "application/json"}}  # fmt: skip
    if choice == 7:
        return {"json": {"inputs": [{"name": "image", "shape": [10**6, 28, 28], "datatype": "FP32",
                                     "data": good}]}}  # fmt: skip
    outputs = [{"name": rng.choice(["nope", "", "label" * 50])}]
    return {"json": {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                 "data": good}], "outputs": outputs}}  # fmt: skip


def _feedback(rng: random.Random, prediction_id: str) -> tuple[str, dict]:
    """A malformed feedback request: (path, request kwargs)."""
    target = rng.choice(
        [prediction_id, prediction_id, "0" * 26, "x" * rng.randint(65, 5000), "%00"]
    )
    single = f"/v1/predictions/{target}/feedback"
    body = rng.choice([
        {}, {"correct": True, "label": 1}, {"correct": "yes"}, {"correct": None}, {"label": 1.5},
        {"label": True}, {"label": ""}, {"label": 10}, {"label": -1}, {"label": 2**70},
        {"label": "not a class"}, {"label": "x" * 300}, {"label": [1]}, {"label": {"a": 1}},
        {"correct": True, "extra": 1}, [], "correct", None, 7,
    ])  # fmt: skip
    if rng.random() < 0.4:
        text = rng.choice(['{"correct": tru', '{"label": 1,}', "\x00\xff", '{"correct": true}' * 2])
        return single, {"content": text.encode("latin-1"),
                        "headers": {"content-type": "application/json"}}  # fmt: skip
    if rng.random() < 0.5:
        return single, {"json": body}
    items = rng.choice([
        [{"id": prediction_id, "correct": True}] * 501,
        [{"correct": True}],
        [{"id": "", "correct": True}],
        [{"id": "i" * 100, "label": 1}],
        [{"id": prediction_id, "correct": True}, {"id": "0" * 26, "correct": True}],
        [{"id": prediction_id, **body}] if isinstance(body, dict) else body,
    ])  # fmt: skip
    return FEEDBACK_BATCH, {"json": rng.choice([{"feedback": items}, items, {"feedback": None}])}


def corpus(seed: int = 17, prediction_id: str = "0" * 26) -> Iterator[tuple[str, str, dict]]:
    """(category, path, request kwargs) for ``CORPUS_SIZE`` malformed requests.

    Args:
        seed: The corpus's random seed.
        prediction_id: A stored prediction, for feedback that reaches its resolution.
    """
    rng = random.Random(seed)
    pngs = [_png(rng, mode) for mode in ("L", "RGB", "RGBA", "LA") for _ in range(3)]
    jpegs = [_jpeg(rng) for _ in range(4)]
    categories = [
        "truncated", "bitflip", "giant", "content_type", "broken_json", "base64",
        "tensor_values", "v2", "long_id", "headers", "feedback",
    ]  # fmt: skip
    for n in range(CORPUS_SIZE):
        category = categories[n % len(categories)]
        image = rng.choice(pngs + jpegs)
        if category == "truncated":
            cut = rng.randrange(0, len(image) - 1)
            yield category, V1, _files([image[:cut]])
        elif category == "bitflip":
            # Flips that leave a decodable image are fine (200); any answer but a 5xx is.
            yield category, V1, _files([_flip(image, rng)], rng.choice(["image/png", "image/jpeg"]))
        elif category == "giant":
            w, h = rng.choice([(100_000, 100_000), (65_535, 65_535), (1, 10**6), (2**31 - 1, 1)])
            blob = _png_declaring(w, h) if rng.random() < 0.6 else _jpeg_declaring(
                min(w, 65_535), min(h, 65_535), rng)  # fmt: skip
            yield category, V1, _files([blob])
        elif category == "content_type":
            kind = rng.choice(
                [
                    "text/plain",
                    "application/xml",
                    "image/png",
                    "multipart/form-data",
                    "application/x-www-form-urlencoded",
                    "",
                    "application/json; x",
                ]
            )
            yield category, V1, {"content": image, "headers": {"content-type": kind}}  # fmt: skip
        elif category == "broken_json":
            text = rng.choice(
                [
                    '{"images": [',
                    '{"tensor": [[0.1, 0.2], [0.3]]}',
                    "[]",
                    "null",
                    '{"images": "abc"}',
                    '{"tensor": 5}',
                    '{"images": [1, 2]}',
                    '{"tensor": [[[[[[[[0]]]]]]]]}',
                    "\x00\xff",
                    '{"a":1}' * 3,
                ]
            )
            yield category, V1, {"content": text.encode("latin-1"),
                                 "headers": {"content-type": "application/json"}}  # fmt: skip
        elif category == "base64":
            raw = base64.b64encode(image).decode()
            broken = rng.choice(
                [
                    raw[: rng.randrange(len(raw))],
                    raw + "!",
                    "%%%",
                    "====",
                    base64.b64encode(b"not an image").decode(),
                ]
            )
            yield category, V1, {"json": {"images": [broken]}}
        elif category == "tensor_values":
            value = rng.choice(["1e999", "-0.5", "1.5", '"x"', "true", "null", "NaN", "-Infinity"])
            row = "[" + ",".join([value] + ["0.5"] * 27) + "]"
            text = '{"tensor": [' + ",".join([row] * 28) + "]}"
            yield category, V1, {"content": text.encode(),
                                 "headers": {"content-type": "application/json"}}  # fmt: skip
        elif category == "v2":
            yield category, V2, _v2(rng)
        elif category == "feedback":
            yield category, *_feedback(rng, prediction_id)
        elif category == "long_id":
            request_id = "r" * rng.randint(65, 10_000)
            yield category, V1, {**_files([pngs[0]]), "headers": {"X-Request-ID": request_id}}
        else:
            headers = rng.choice([
                {"Inference-Header-Content-Length": "9" * 40},
                {"Authorization": "Basic " + "a" * 8000},
                {"X-API-Key": "k" * 8000},
                {"Content-Length": "abc"},
                {"X-Request-ID": "\t"},
            ])  # fmt: skip
            path = rng.choice([V1, V2])
            yield category, path, {"content": b"{}", "headers": headers}


def _backend_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'corpus.db'}"
    else:
        from tests.service.conftest import _postgres_schema_url

        yield from _postgres_schema_url()


def _with_key(kwargs: dict, key: str | None) -> dict:
    """The request with a valid key, unless it is off or the request sends its own."""
    headers = dict(kwargs.get("headers", {}))
    if key is None or {"authorization", "x-api-key"} & {h.lower() for h in headers}:
        return kwargs
    return {**kwargs, "headers": {**headers, "X-API-Key": key}}


@pytest.mark.parametrize("keys", ["open", "keyed"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_malformed_request_gets_a_server_error(
    backend: str, keys: str, model_repo: Path, tmp_path: Path
) -> None:
    for url in _backend_url(backend, tmp_path):
        settings = Settings(
            _env_file=None,
            repo=model_repo,
            database_url=url,
            warmup_batch_sizes=[1],
            max_batch_size=8,
            rate_limit=0.0,
            caller_concurrency=0,
            torch_threads=1,
        )
        key = None
        if keys == "keyed":
            db = Database(url)
            db.upgrade()
            key = create_key(db, "corpus")[1]
            db.dispose()
        seen: Counter = Counter()
        failures = []
        with TestClient(create_app(settings)) as client:
            stored = client.post(V1, **_with_key({"json": {"tensor": [[0.5] * 28] * 28}}, key))
            prediction_id = stored.json()["predictions"][0]["id"]
            for category, path, kwargs in corpus(prediction_id=prediction_id):
                r = client.post(path, **_with_key(kwargs, key))
                seen[(category, r.status_code)] += 1
                if r.status_code >= 500:
                    failures.append(f"{category} {path} -> {r.status_code}: {r.text[:200]}")
                else:
                    assert r.status_code == 200 or r.json()["error"], r.text
        assert sum(seen.values()) == CORPUS_SIZE
        assert not failures, "\n".join(failures[:10])
        # The corpus reached the validators of every category (it is not all one kind of 4xx).
        refused = {category for (category, status) in seen if 400 <= status < 500}
        assert len(refused) == 11, seen
