"""One message for an output the CLI cannot write (missing directory, read-only file system,
no permission, disk full): ``error: cannot write PATH: reason`` on stderr, exit 2 (usage or
configuration error, :mod:`cli.main`) — never a Python traceback."""

from __future__ import annotations

import os
import sys

import click

__all__ = ["cannot_write"]


def cannot_write(exc: OSError, path: str | os.PathLike[str]) -> None:
    """Print why ``path`` (or the file the OS names in ``exc``) could not be written; exits 2.

    Raises:
        SystemExit: always (code 2).
    """
    target = exc.filename if exc.filename is not None else path
    click.echo(f"error: cannot write {os.fsdecode(target)}: {exc.strerror or exc}", err=True)
    sys.exit(2)
