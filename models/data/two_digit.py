"""Two-digit MNIST: two MNIST digits side by side, 28 high x 56 wide, grey, 100 classes.

The label of a pair is ``10 * left + right``, named ``"00"`` to ``"99"``. The pairs are built in
memory from the ``mnist`` IDX files (nothing else on disk), always with ``PAIRING_SEED``, so
every load gives the same pairs, in the same order:

- train: ``TRAIN_PAIRS_PER_CLASS`` = 600 pairs of each of the 100 classes (60,000 pairs), of
  MNIST *training* digits only, in two blocks of distinct digits:

  - the head, pairs 0 to 53,999: 540 pairs a class of the training digits not reserved (4,500
    of the 5,000 training digits of the shared data, 450 a class);
  - the tail, the last ``TAIL_PAIRS`` = 6,000 pairs: ``TAIL_PAIRS_PER_CLASS`` = 60 pairs a
    class of the reserved digits only: ``TAIL_DIGITS_PER_CLASS`` = 50 training digits of each
    class (500), drawn with ``PAIRING_SEED`` (``reserved_digits``).

  No digit appears in both blocks, so a recipe that holds out the tail (``[data]
  held_out_tail = 6000``) holds out *digits*: its held-out pairs are as new to the model as test
  pairs, and a trust score calibrated on them keeps its alpha on test pairs. (Held-out pairs of
  trained-on digits are easier: the first model, trained on a random nine tenths of pairs that
  all shared their 5,000 digits, scored 99.90% on the held-out tenth against 97.85% on test
  pairs.) With the shared data's 500 digits a class, every training digit appears exactly 12
  times on the left and 12 times on the right, within its block.
- test: ``TEST_PAIRS_PER_CLASS`` = 100 pairs of each class (10,000 pairs), of MNIST *test* digits
  only; each of the 10,000 test digits appears about once on each side (the test classes hold
  892 to 1,135 digits, so 0 to 2 times a side, about twice in all).

How pairs are drawn (``pair_indices``; each train block on its own, from its own digits): for
each digit class ``d`` the left halves of the pairs whose left digit is ``d`` (10 classes x P
pairs) are filled from a stream of seeded random permutations of the class's digits, one
permutation after another, so that no digit repeats before every digit of its class has been
used; the right halves from an independent stream likewise. A digit may sit on both sides of the
same pair (class ``"dd"``), rarely. Seeds: the reserved digits ``PAIRING_SEED``, the head's pairs
``PAIRING_SEED + 1``, the tail's ``PAIRING_SEED + 2``, the test pairs ``PAIRING_SEED``.

Order: a block's pairs come in P rounds; round ``r`` holds the ``r``-th pair of every class, the
classes in a seeded random order. Any prefix (``load_dataset(..., limit=n)``) is therefore
balanced: every class ``n // 100`` or ``n // 100 + 1`` times (a train prefix of up to 54,000
pairs is all head; a longer one adds whole rounds of the tail, also balanced).
"""

import torch
from torch import Tensor

from models.data.dataset import Dataset

NAME = "two-digit-mnist"
CLASS_NAMES: tuple[str, ...] = tuple(f"{i:02d}" for i in range(100))
INPUT_SHAPE = (1, 28, 56)
SOURCE = "mnist"
PAIRING_SEED = 0
TRAIN_PAIRS_PER_CLASS = 600
TEST_PAIRS_PER_CLASS = 100
PAIRS_PER_CLASS = {"train": TRAIN_PAIRS_PER_CLASS, "test": TEST_PAIRS_PER_CLASS}
TAIL_PAIRS_PER_CLASS = 60
TAIL_DIGITS_PER_CLASS = 50
TAIL_PAIRS = 100 * TAIL_PAIRS_PER_CLASS  # the last train pairs, of the reserved digits only
_DIGITS = 10


def permutation_stream(members: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` of ``members``: random permutations of them, one after another, cut to ``n``, so no
    member repeats before every member has been drawn."""
    rounds = -(-n // len(members))  # ceil
    perms = [members[torch.randperm(len(members), generator=generator)] for _ in range(rounds)]
    return torch.cat(perms)[:n]


def pair_indices(labels: Tensor, pairs_per_class: int, seed: int = PAIRING_SEED) -> Tensor:
    """Which digits make up each pair, in the data set's order (see the module docstring).

    Args:
        labels: int64 digit labels (N,), each in 0..9, every digit present.
        pairs_per_class: P, the pairs of each of the 100 classes.
        seed: seeds the streams and the order.

    Returns:
        int64 (100 * P, 2): the indices into ``labels`` of each pair's left and right digit.

    Raises:
        ValueError: a digit class has no member.
    """
    generator = torch.Generator().manual_seed(seed)
    p = pairs_per_class
    left = torch.empty(_DIGITS, _DIGITS, p, dtype=torch.long)  # (left digit, right digit, r)
    right = torch.empty_like(left)
    for d in range(_DIGITS):
        members = torch.nonzero(labels == d).flatten()
        if len(members) == 0:
            raise ValueError(f"no digit {d} to pair: two-digit MNIST needs all ten classes")
        left[d] = permutation_stream(members, _DIGITS * p, generator).view(_DIGITS, p)
        right[:, d] = permutation_stream(members, _DIGITS * p, generator).view(_DIGITS, p)
    by_class = torch.stack([left.flatten(), right.flatten()], dim=1)  # class c's r-th: c * P + r
    classes = torch.stack([torch.randperm(_DIGITS**2, generator=generator) for _ in range(p)])
    order = (classes * p + torch.arange(p)[:, None]).flatten()  # (P, 100): round r, class order
    return by_class[order]


def reserved_digits(labels: Tensor, per_class: int, seed: int = PAIRING_SEED) -> Tensor:
    """The training digits kept for the tail: ``per_class`` of each digit class, seeded.

    Args:
        labels: int64 digit labels (N,), each in 0..9.
        per_class: how many digits of each class to reserve.
        seed: seeds which ones.

    Returns:
        Sorted int64 indices into ``labels``, ``10 * per_class`` of them.

    Raises:
        ValueError: a digit class has no more than ``per_class`` members, leaving none for the
            head.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for d in range(_DIGITS):
        members = torch.nonzero(labels == d).flatten()
        if len(members) <= per_class:
            raise ValueError(
                f"{len(members)} digits {d}: reserving {per_class} for the tail leaves none"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def train_pair_indices(
    labels: Tensor,
    pairs_per_class: int = TRAIN_PAIRS_PER_CLASS,
    tail_pairs_per_class: int = TAIL_PAIRS_PER_CLASS,
    tail_digits_per_class: int = TAIL_DIGITS_PER_CLASS,
    seed: int = PAIRING_SEED,
) -> Tensor:
    """The training pairs: a head of the unreserved digits, then a tail of the reserved ones.

    Args:
        labels: int64 digit labels (N,), each in 0..9.
        pairs_per_class: P, the pairs of each class in both blocks together.
        tail_pairs_per_class: the tail's pairs of each class (the last ``100 *`` this pairs).
        tail_digits_per_class: the digits of each class reserved for the tail.
        seed: seeds the reserved digits (``seed``), the head (``seed + 1``) and the tail
            (``seed + 2``).

    Returns:
        int64 (100 * P, 2): the indices into ``labels`` of each pair's left and right digit.

    Raises:
        ValueError: a digit class has too few members to reserve ``tail_digits_per_class``.
    """
    reserved = reserved_digits(labels, tail_digits_per_class, seed)
    others = torch.ones(len(labels), dtype=torch.bool)
    others[reserved] = False
    rest = torch.nonzero(others).flatten()
    head = rest[pair_indices(labels[rest], pairs_per_class - tail_pairs_per_class, seed + 1)]
    tail = reserved[pair_indices(labels[reserved], tail_pairs_per_class, seed + 2)]
    return torch.cat([head, tail])


def place_side_by_side(left: Tensor, right: Tensor) -> Tensor:
    """Images (B, C, H, W) and (B, C, H, W') side by side: (B, C, H, W + W')."""
    return torch.cat([left, right], dim=-1)


def pair_labels(digit_labels: Tensor, pairs: Tensor) -> Tensor:
    """The labels ``10 * left + right`` of ``pairs`` (``pair_indices``) of digits so labelled."""
    return _DIGITS * digit_labels[pairs[:, 0]] + digit_labels[pairs[:, 1]]


def make_two_digit(digits: Dataset, split: str, limit: int | None = None) -> Dataset:
    """Two-digit MNIST's ``split`` from that split's MNIST digits.

    Args:
        digits: the whole MNIST ``split`` (uint8 (N, 1, 28, 28), labels 0..9).
        split: ``"train"`` (``train_pair_indices``: head and reserved tail) or ``"test"``
            (``pair_indices``); how many pairs: ``PAIRS_PER_CLASS``.
        limit: keep the first ``limit`` pairs (class-balanced, see the module docstring).

    Returns:
        The ``Dataset``, x uint8 (n, 1, 28, 56), y = 10 * left + right, named ``NAME``.
    """
    if split == "train":
        pairs = train_pair_indices(digits.y)
    else:
        pairs = pair_indices(digits.y, PAIRS_PER_CLASS[split])
    drawn = "all"
    if limit is not None and limit < len(pairs):
        pairs = pairs[:limit]
        drawn = f"the first {limit} pairs (class-balanced)"
    x = place_side_by_side(digits.x[pairs[:, 0]], digits.x[pairs[:, 1]])  # (n, 1, 28, 56)
    return Dataset(x, pair_labels(digits.y, pairs), CLASS_NAMES, NAME, drawn)
