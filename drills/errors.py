"""Root exception of the drills package.

Every error here is raised before anything is touched when the input is bad (unknown topic or
region, a range past the end, a checkpoint of another job), so the CLI prints its message and
exits 2 without a traceback.
"""


class DrillsError(Exception):
    """Base of every error raised by the drills package."""


class BadInput(DrillsError):
    """The command asked for something that does not exist or cannot be done; nothing was changed."""


class GroupActive(DrillsError):
    """A consumer group still has members, so its offsets cannot be moved safely."""


class ReplayFailed(DrillsError):
    """The broker did not acknowledge what a replay sent; the checkpoint holds the last safe point."""
