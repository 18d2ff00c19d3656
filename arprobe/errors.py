"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: a wrong option, a missing file, data a run did not record. Message is one sentence."""


class MissingDataError(UserError, KeyError):
    """A probe or reader asked for data the run did not record."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class StoreError(UserError):
    """A run store that cannot be read as one: truncated, corrupt, or with malformed attributes."""
