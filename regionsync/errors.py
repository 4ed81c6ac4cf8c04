"""Root exception of the regionsync package (CLI, settings, embedded stack)."""


class RegionsyncError(Exception):
    """Base of every error raised by the regionsync package."""


class ConfigError(RegionsyncError):
    """Settings are missing or inconsistent."""


class StackError(RegionsyncError):
    """A process of the embedded stack failed to start, stop or answer."""
