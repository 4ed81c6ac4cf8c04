"""Root exception of the dialog package."""

from __future__ import annotations


class DialogError(Exception):
    """Base of every error raised by dialog/."""


class MalformedEvent(DialogError):
    """A record on the session-event topic that can never be applied.

    It becomes data, not a crash loop: the worker sends it to the dead-letter topic with
    ``reason`` (a short machine-readable code) and ``detail`` (for humans), and moves on.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class OffsetConflict(DialogError):
    """The state store's offsets moved under a worker (another worker wrote them): nothing was written."""


class SnapshotError(DialogError):
    """A snapshot could not be written or none could be read."""


class DeliveryError(DialogError):
    """The broker did not acknowledge an event: the caller must not tell the customer it happened."""


class PromotionsChanged(DialogError):
    """A promotion was recorded while a batch was folded: nothing was written; fold it again."""
