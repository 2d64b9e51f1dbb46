"""Photos for the decoding tests: the lab's phone photos, and JPEG bombs made from them."""

import struct

from gga_lab.photos import PHONE_SIZE, jpeg_bytes, phone_jpeg

__all__ = ["PHONE_SIZE", "jpeg_bytes", "phone_jpeg", "with_declared_size"]


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size: a bomb in a few hundred bytes.

    Rewrites the height and width of the first start-of-frame marker (SOF0-SOF2), which is
    all a decoder reads before it allocates.
    """
    data = bytearray(jpeg)
    at = 2
    while at + 4 <= len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise ValueError("no start-of-frame marker in this JPEG")
