"""Feedback on stored predictions: what a client says, resolved against what was predicted.

A client names the true class (its index, or its name in the model's card) or says only
whether the prediction was correct. Resolution turns each into a
:class:`~service.store.feedback.FeedbackEntry` (``correct`` and, when known, the true class),
and the store records a request's entries in one transaction: all of them, or none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidInput
from service.registry import ModelRegistry
from service.store import Database
from service.store import feedback as store
from service.store.feedback import FeedbackEntry


@dataclass(frozen=True)
class FeedbackRequest:
    """One prediction's feedback as sent: exactly one of ``label`` and ``correct``.

    Attributes:
        prediction_id: The prediction.
        label: The true class, by index or by name.
        correct: Whether the predicted class was right.
    """

    prediction_id: str
    label: int | str | None = None
    correct: bool | None = None

    @classmethod
    def from_body(cls, prediction_id: str, body: Any) -> FeedbackRequest:
        """From a validated wire body (``schemas.FeedbackIn`` or a batch item)."""
        return cls(prediction_id=prediction_id, label=body.label, correct=body.correct)


class FeedbackService:
    """Resolves and stores feedback; reads a prediction's feedback history.

    Args:
        db: The store.
        models: The served models (their cards name the classes).
    """

    def __init__(self, db: Database, models: ModelRegistry) -> None:
        self.db = db
        self.models = models

    async def post(
        self, requests: Sequence[FeedbackRequest], owner: str | None, author: str | None
    ) -> list[dict[str, Any]]:
        """Store ``requests`` in one transaction, in order (a later one on the same id wins).

        Args:
            requests: The feedback.
            owner: Whose predictions the caller may touch (None: every key's).
            author: The caller's key id, kept in the history.

        Returns:
            One record per request (see ``store.record_feedback``), with ``class_name``.

        Raises:
            PredictionNotFound: An id is unknown or another key's; nothing is stored.
            InvalidInput: A class is out of range or not one of the model's names.
        """
        return await asyncio.to_thread(self._post, requests, owner, author)

    def _post(
        self, requests: Sequence[FeedbackRequest], owner: str | None, author: str | None
    ) -> list[dict[str, Any]]:
        found = store.predictions_for_feedback(self.db, [r.prediction_id for r in requests], owner)
        entries = [self._resolve(r, found[r.prediction_id]) for r in requests]
        recorded = store.record_feedback(self.db, entries, owner, author)
        for record in recorded:
            names = self._class_names(found[record["prediction_id"]]["model"])
            label = record["label"]
            record["class_name"] = names[label] if names and label is not None else None
        return recorded

    async def history(self, prediction_id: str, owner: str | None) -> list[dict[str, Any]]:
        """Every feedback post on one prediction, oldest first.

        Raises:
            PredictionNotFound: The id is unknown or another key's.
        """
        return await asyncio.to_thread(store.feedback_history, self.db, prediction_id, owner)

    def _class_names(self, model: str) -> list[str] | None:
        """The model's class names; None when it is no longer served here."""
        try:
            return list(self.models.get(model).card.class_names)
        except LookupError:
            return None

    def _resolve(self, request: FeedbackRequest, prediction: dict[str, Any]) -> FeedbackEntry:
        predicted = int(prediction["label"])
        if request.label is None:
            # "correct" alone: the true class is the predicted one, or unknown.
            correct = bool(request.correct)
            return FeedbackEntry(request.prediction_id, correct, predicted if correct else None)
        label = self._class_index(request, prediction)
        return FeedbackEntry(request.prediction_id, label == predicted, label)

    def _class_index(self, request: FeedbackRequest, prediction: dict[str, Any]) -> int:
        classes = int(prediction["classes"])
        if isinstance(request.label, int):
            if not 0 <= request.label < classes:
                raise InvalidInput(
                    f"prediction {request.prediction_id!r}: label {request.label} is not a class "
                    f"of model {prediction['model']!r}, which has classes 0 to {classes - 1}"
                )
            return request.label
        names = self._class_names(prediction["model"])
        if names is None:
            raise InvalidInput(
                f"prediction {request.prediction_id!r}: model {prediction['model']!r} is not "
                "served here, so class names cannot be resolved; send the class index instead"
            )
        if request.label in names:
            return names.index(request.label)
        # People type "ankle boot" for "Ankle boot": a name that matches one class but for case
        # is that class (two classes differing only in case would need the exact spelling).
        folded = [i for i, name in enumerate(names) if name.casefold() == request.label.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise InvalidInput(
            f"prediction {request.prediction_id!r}: {request.label!r} is not a class of "
            f"model {prediction['model']!r}; its classes are {', '.join(names)}"
        )
