"""The errors a person can act on. Every command turns them into one line
on stderr (`error: ...`) and an exit code, never a traceback; the message
says where the problem is and what to do."""

from __future__ import annotations


class UserError(Exception):
    """A problem with something the user controls (a file, a setting, the database)."""

    exit_code = 1


class ConfigError(UserError):
    """A configuration problem a person must fix; the message says where and how."""

    exit_code = 2


class StoreError(UserError):
    """The database cannot be used; the message says why and what to do."""

    exit_code = 2


class DatabaseAway(StoreError):
    """A database server that stopped answering. The store logs when it goes
    and when it is back; each call that fails meanwhile need not say it again."""
