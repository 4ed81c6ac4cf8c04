"""Root exception of the streams package."""


class StreamsError(Exception):
    """Base of every error raised by streams/."""


class PoisonEvent(StreamsError):
    """An input event that can never be processed; it goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
