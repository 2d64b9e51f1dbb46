"""What a served model takes and how much one request may send: the decoders' contract."""

from dataclasses import dataclass

from models.imaging import ResizeMode


@dataclass(frozen=True)
class InputSpec:
    """What a model takes and how much a request may send.

    Attributes:
        input_shape: The model's (C, H, W).
        resize: Resize images of another size (the model card's preprocessing).
        max_images: Most images per request.
        max_pixels: Most pixels decoded per image (checked before decoding).
        resize_mode: How an image of another size is resized (the card's ``resize_mode``).
    """

    input_shape: tuple[int, int, int]
    resize: bool
    max_images: int
    max_pixels: int
    resize_mode: ResizeMode = "stretch"

    @property
    def min_side(self) -> int:
        """Shortest image side accepted: half the model's, so that upscaling stays within 2x.

        A 1x1 image resized to 28x28 is one grey value, classified with confidence but carrying
        nothing; refusing it tells the client its image is not what the model reads.
        """
        return max(1, min(self.input_shape[1:]) // 2)
