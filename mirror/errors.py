"""The mirror package's root exception."""


class MirrorError(Exception):
    """Root of every error raised by mirror/."""


class TopicMismatch(MirrorError):
    """A remote topic exists in the target with fewer partitions than its source: copying
    partition by partition would put records where no consumer expects them."""
