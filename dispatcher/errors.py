"""Errors a user reads: each carries a message in the user's language and the exit status."""

from __future__ import annotations


class CanhBaoError(Exception):
    """Base of the errors the CLI turns into a message and an exit status."""

    exit_code = 2


class ConfigError(CanhBaoError):
    """The configuration (file or environment) is wrong; nothing was started."""

    exit_code = 2


class UsageError(CanhBaoError):
    """A command was called in a way that cannot work (wrong user, wrong state, missing file)."""

    exit_code = 2


class InputRejected(CanhBaoError):
    """Some input data was refused: an invalid alert, an unknown region, rejected rows."""

    exit_code = 1
