"""``lonewatch console …``: run the web console and manage its users (issue 13).

Reads ``-c relay.toml`` (``[redis] url`` and ``[console]``) like the relay; ``--redis URL``
(or ``LONEWATCH_REDIS_URL``) overrides the URL for the user commands. Passwords are asked
for twice without echo, or read from standard input with ``--password-stdin`` (one line);
never on the command line (it would stand in the shell history and in ``ps``). Every user
change is written to the console's audit trail as ``cli:<unix user>``.

Exit codes as :mod:`cli.main`: 0 done, 1 the thing asked for did not happen (no such user),
2 usage or configuration error, 3 Redis unreachable.
"""

from __future__ import annotations

import getpass
import sys

import click

from cli.registry import EXIT_CONFIG, EXIT_FAILED, _fail, _redis_options, _store

__all__ = ["console"]


@click.group("console")
def console() -> None:
    """The web console for the people who answer alarms (queue, take charge, resolve,
    workers on shift, history, monthly figures).

    \b
    Example:
      lonewatch console user add per --role operator --name "Per Jensen"
      lonewatch console run -c /etc/lonewatch/relay.toml
    """


@console.command("run")
@click.option("-c", "--config", "path", default="/etc/lonewatch/relay.toml", show_default=True,
              envvar="LONEWATCH_RELAY_CONFIG", type=click.Path(dir_okay=False), help="relay.toml ([redis] and [console]).")
@click.option("--listen", metavar="HOST:PORT", help="Override [console] listen, e.g. 127.0.0.1:8080.")
def console_run(path: str, listen: str | None) -> None:
    """Serve the console until SIGTERM (put it behind a TLS reverse proxy: README).

    \b
    Example:
      lonewatch console run -c /etc/lonewatch/relay.toml --listen 127.0.0.1:8080
    """
    import logging

    from console.config import load_console_config
    from console.server import run
    from protocol.errors import LonewatchError
    from relay.store import StoreError

    try:
        cfg = load_console_config(path)
    except LonewatchError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except OSError as exc:
        _fail(f"{path}: {exc.strerror}", EXIT_CONFIG)
    host = port = None
    if listen:
        h, sep, p = listen.rpartition(":")
        if not (sep and h and p.isdigit() and 0 < int(p) < 65536):
            raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8080", param_hint="--listen")
        host, port = h.strip("[]"), int(p)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    try:
        run(cfg, host=host, port=port)
    except StoreError as exc:
        _fail(f"relay Redis unreachable: {exc}", 3)


@console.group("user")
def user() -> None:
    """Console users: admin (users, audit), operator (take charge, resolve), viewer (reads).

    \b
    Example:
      lonewatch console user add guard --role operator --name "Omar Haddad"
      lonewatch console user passwd guard
      lonewatch console user remove guard
    """


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        _fail("the two passwords differ; nothing changed", EXIT_CONFIG)
    return first


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@user.command("add")
@click.argument("login")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), required=True)
@click.option("--name", default="", help="Name shown to the other contacts when this user takes charge.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@_redis_options
def user_add(login: str, role: str, name: str, password_stdin: bool, config_path: str, redis_url: str | None) -> None:
    """Add a console user (argon2id password hash in the relay's Redis).

    \b
    Example:
      echo 'a long passphrase' | lonewatch console user add per --role operator --name "Per Jensen" --password-stdin
    """
    from console.audit import Audit
    from console.errors import UserError
    from console.users import UserStore, check_login

    try:
        check_login(login)
    except UserError as exc:
        _fail(str(exc), EXIT_CONFIG)
    store = _store(config_path, redis_url)
    try:
        u = UserStore(store).add(login, role, _password(password_stdin), name=name)
    except UserError as exc:
        _fail(str(exc), EXIT_CONFIG)
    Audit(store).record(_actor(), "cli", "user_add", target=u.login, detail=f"role {u.role}")
    click.echo(f"console user {u.login} ({u.role}, shown as {u.name!r}) added")


@user.command("remove")
@click.argument("login")
@_redis_options
def user_remove(login: str, config_path: str, redis_url: str | None) -> None:
    """Remove a console user; their sessions end at once.

    \b
    Example:
      lonewatch console user remove per
    """
    from console.audit import Audit
    from console.errors import NotFound
    from console.users import UserStore

    store = _store(config_path, redis_url)
    try:
        UserStore(store).remove(login)
    except NotFound as exc:
        _fail(str(exc), EXIT_FAILED)
    Audit(store).record(_actor(), "cli", "user_remove", target=login.strip().lower())
    click.echo(f"console user {login.strip().lower()} removed")


@user.command("passwd")
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@_redis_options
def user_passwd(login: str, password_stdin: bool, config_path: str, redis_url: str | None) -> None:
    """Set a new password; every session of the user ends.

    \b
    Example:
      lonewatch console user passwd per
    """
    from console.audit import Audit
    from console.errors import NotFound, UserError
    from console.users import UserStore

    store = _store(config_path, redis_url)
    try:
        UserStore(store).passwd(login, _password(password_stdin))
    except NotFound as exc:
        _fail(str(exc), EXIT_FAILED)
    except UserError as exc:
        _fail(str(exc), EXIT_CONFIG)
    Audit(store).record(_actor(), "cli", "user_passwd", target=login.strip().lower())
    click.echo(f"password of {login.strip().lower()} changed; their sessions ended")


@user.command("list")
@_redis_options
def user_list(config_path: str, redis_url: str | None) -> None:
    """List console users.

    \b
    Example:
      lonewatch console user list
    """
    from console.users import UserStore

    for u in UserStore(_store(config_path, redis_url)).all():
        click.echo(f"{u.login:<24} {u.role:<9} {u.name}")
