"""The error family: every failure a user can cause or meet, with a hint and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1  # the run completed, but some items could not be read (or findings remain)
EXIT_ERROR = 2  # usage, configuration or connection error; a refused or failed operation


class AuditorError(Exception):
    """Base of every error auditor reports as one clear line."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConnectError(AuditorError):
    """libvirt could not be reached."""


class NotFound(AuditorError):
    """A pool, volume, domain or file does not exist."""


class InUse(AuditorError):
    """A volume is referenced by a domain and the operation would harm it."""


class ImageError(AuditorError):
    """qemu-img could not read an image (corrupt, truncated, locked, unreadable)."""


class CommandError(AuditorError):
    """An external command could not run, timed out or failed."""


class ConfigError(AuditorError):
    """The policy/config file is missing, malformed or has a bad key or value."""


class PolicyError(AuditorError):
    """A guard refused an operation (overcommit, free space, format trap)."""


class OperationError(AuditorError):
    """libvirt refused or failed a managed operation."""


class HistoryError(AuditorError):
    """The history database is unusable (corrupt, foreign, locked)."""


class PublishError(AuditorError):
    """The report folder cannot be written or replaced."""


class StateError(AuditorError):
    """The state folder (journal, locks) cannot be used."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind (aborting streams, removing what this run
    made) and exit with 128 + the signal number. Like KeyboardInterrupt, not an Exception,
    so no ``except Exception`` swallows it."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.name = name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
