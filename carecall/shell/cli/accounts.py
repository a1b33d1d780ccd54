"""``carecall audit`` / ``users``: the audit log's integrity and console logins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from carecall.shell.cli.common import fail, run, settings_from

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
users_app = typer.Typer(help="Console logins.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every audit row against the hash chain; name the first edited, deleted or
    reordered row. Exit 0 when intact, 1 when not."""
    from carecall.shell.runtime import open_core
    from dispatcher.audit.service import verify_log

    s = settings_from()

    async def go() -> Any:
        core = await open_core(s, migrate=False)
        try:
            return await verify_log(core.maker)
        finally:
            await core.close()

    verdict = run(go())
    if verdict.ok:
        typer.echo(f"audit log intact: {verdict.rows_checked} rows verified")
        return
    typer.echo(
        f"audit log BROKEN at seq {verdict.first_bad_seq}: {verdict.problem} ({verdict.rows_checked} rows checked)",
        err=True,
    )
    raise typer.Exit(1)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="operator, supervisor, admin or responder")],
    station: Annotated[
        str | None, typer.Option(help="Station whose subtree the user sees (not for admins).")
    ] = None,
    staff: Annotated[
        str | None, typer.Option(help="A responder's staff record (their phone app: /m/).")
    ] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password: Annotated[
        str | None,
        typer.Option(
            help="Password (default: generated and printed once).", envvar="CARECALL_NEW_USER_PASSWORD"
        ),
    ] = None,
) -> None:
    """Create a login: the console's, or a responder's phone app (--role responder --staff ID)."""
    import secrets as _secrets

    from carecall.shell.runtime import open_core
    from dispatcher.auth.users import create_user

    s = settings_from()
    pw = password or _secrets.token_urlsafe(12)

    async def go() -> None:
        core = await open_core(s)
        try:
            async with core.maker() as session, session.begin():
                await create_user(
                    session,
                    username=username,
                    password=pw,
                    role=role,
                    station_id=station,
                    display_name=name or username,
                    staff_id=staff,
                    now=datetime.now(UTC),
                )
        finally:
            await core.close()

    try:
        run(go())
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"user {username} ({role}) created" + ("" if password else f"; password: {pw} (shown once)"))


@users_app.command("unlock")
def users_unlock(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Lift a sign-in lock (after too many failed sign-ins) before it runs out."""
    from carecall.shell.runtime import open_core
    from dispatcher.auth.lockout import unlock_user

    s = settings_from()

    async def go() -> bool:
        core = await open_core(s)
        try:
            return await unlock_user(core.maker, username=username, actor="cli", now=datetime.now(UTC))
        finally:
            await core.close()

    try:
        changed = run(go())
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"user {username} unlocked" if changed else f"user {username} was not locked")


@users_app.command("revoke")
def users_revoke(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """End every token the user holds now (a lost device, a leaked password)."""
    from carecall.shell.runtime import open_core
    from dispatcher.auth.users import revoke_user_tokens

    s = settings_from()

    async def go() -> None:
        core = await open_core(s)
        try:
            await revoke_user_tokens(core.maker, username=username, actor="cli", now=datetime.now(UTC))
        finally:
            await core.close()

    try:
        run(go())
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"every token of {username} revoked; they must sign in again")
