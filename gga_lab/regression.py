"""Did a refit lose what the shipped detector caught? An evaluation against the committed one.

``gga evaluate`` reads the model's previously committed ``docs/results/<model>/results.json``
before it writes anything, and compares each kind's TNR@95TPR of the trust score: every kind
that got worse by more than ``threshold`` (5 points by default) is printed and recorded, so that a
refit never silently loses a family of inputs the earlier detector caught. Two evaluations are
only comparable at the same protocol (inputs, budgets, seed): where the configurations differ the
comparison says which settings differ, and still shows the figures.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TRUST = "trust score"
THRESHOLD = 0.05
# The settings that change which inputs a kind holds; a difference makes the TNRs less comparable.
PROTOCOL = ("n", "n_slow", "seed", "eps_linf", "eps_l2", "pgd_steps", "csa_steps", "split")


@dataclass(frozen=True)
class KindChange:
    """One kind's TNR@95TPR before and after, as fractions."""

    kind: str
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class Comparison:
    """An evaluation against the committed one of the same model.

    Attributes:
        source: Where the committed results were read.
        changes: Every kind both evaluations hold, in the committed order.
        worse: The kinds whose TNR fell by more than ``threshold``.
        threshold: The fall that counts, as a fraction.
        protocol_differences: ``setting: before -> after`` for each protocol setting that differs.
        pooled: The trust score's pooled AUROC, (before, after).
    """

    source: str
    changes: list[KindChange]
    worse: list[KindChange]
    threshold: float
    protocol_differences: list[str]
    pooled: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["worse"] = [c.kind for c in self.worse]
        return out

    def lines(self) -> list[str]:
        """What ``gga evaluate`` prints: the verdict, then each kind that got worse."""
        head = (
            f"against {self.source}: pooled AUROC {100 * self.pooled[0]:.1f} -> "
            f"{100 * self.pooled[1]:.1f}; "
        )
        if self.worse:
            head += (
                f"{len(self.worse)} kind(s) worse by more than {100 * self.threshold:.0f} points "
                "of TNR@95TPR:"
            )
        else:
            head += f"no kind worse by more than {100 * self.threshold:.0f} points of TNR@95TPR"
        out = [head]
        out += [
            f"  {c.kind}: {100 * c.before:.1f} -> {100 * c.after:.1f} ({100 * c.change:+.1f})"
            for c in self.worse
        ]
        if self.protocol_differences:
            out.append(
                "  (protocols differ, figures less comparable: "
                + "; ".join(self.protocol_differences)
                + ")"
            )
        return out


def read_committed(path: Path) -> dict[str, Any] | None:
    """The results.json at ``path`` (a file or its folder); None when there is none."""
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def compare(
    before: dict[str, Any],
    after: dict[str, Any],
    source: str,
    threshold: float = THRESHOLD,
) -> Comparison:
    """Compare the trust score's TNR per kind of two results.json payloads.

    Args:
        before: The committed results.
        after: The new evaluation's results.
        source: Where ``before`` came from (printed).
        threshold: The fall in TNR, as a fraction, that counts as worse.

    Raises:
        ValueError: Either payload has no trust score row.
    """
    if TRUST not in before.get("tnr", {}) or TRUST not in after.get("tnr", {}):
        raise ValueError("both results need a 'trust score' row under 'tnr'")
    old, new = before["tnr"][TRUST], after["tnr"][TRUST]
    changes = [KindChange(k, float(old[k]), float(new[k])) for k in old if k in new]
    worse = [c for c in changes if c.change < -threshold]
    config_before, config_after = before.get("config", {}), after.get("config", {})
    differences = [
        f"{key}: {config_before.get(key)} -> {config_after.get(key)}"
        for key in PROTOCOL
        if config_before.get(key) != config_after.get(key)
    ]
    pooled = (
        float(before.get("pooled", {}).get(TRUST, {}).get("AUROC", float("nan"))),
        float(after.get("pooled", {}).get(TRUST, {}).get("AUROC", float("nan"))),
    )
    return Comparison(source, changes, worse, threshold, differences, pooled)
