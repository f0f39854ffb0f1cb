"""The `bananastand` command: `serve`, `migrate` and `admin …`."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bananastand.billing import Mismatch
from bananastand.config import Settings
from bananastand.core import Core
from bananastand.errors import BananastandError, InvalidRequest

if TYPE_CHECKING:
    from bananastand.container import Services

T = TypeVar("T")

app = typer.Typer(help="Bananastand: a self-hosted Nano Banana image API.", no_args_is_help=True)
admin = typer.Typer(help="Manage accounts, credits and API keys.", no_args_is_help=True)
app.add_typer(admin, name="admin")


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the API server (migrates the database first)."""
    from bananastand import server
    from bananastand.app import create_app

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)
        settings.check_production()
        settings.check_mode()
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    lock = _single_server_lock(settings) if not settings.scale_out else None
    # Before anything is created or printed once (the demo key): the port must be free.
    _check_port(settings.host, settings.port)
    _configure_logging(settings.log_level)
    server.run(create_app(settings, on_ready=_announce), settings)
    del lock


def _announce(services: Services) -> None:
    base = services.settings.base_url
    lines = [
        f"Bananastand is serving the Nano Banana API at {base}/api/v1",
        f"Web console: {base}/console",
    ]
    if services.pending_setup_code is not None:
        lines += [
            "",
            "No admin yet: sign up on the console with this admin setup code to become one:",
            "",
            f"    admin setup code: {services.pending_setup_code}",
        ]
    if services.demo_key is not None:
        lines += [
            "",
            "A demo account was created with "
            f"{services.settings.demo_credits} credits. Its API key (shown only this once):",
            "",
            f"    {services.demo_key.secret}",
            "",
            "Try it:",
            f"    curl -X POST {base}/api/v1/generate \\",
            '      -H "Content-Type: application/json" \\',
            f'      -H "Authorization: Bearer {services.demo_key.secret}" \\',
            """      -d '{"prompt": "A cute orange cat sitting on a windowsill"}'""",
        ]
    elif services.settings.demo_account:
        lines += [
            "",
            "The demo account's key (demo@bananastand.local) was shown on the first start "
            "only; make another with:",
            "    bananastand admin create-key demo@bananastand.local",
        ]
    # Printed to the console, never logged: the key must not reach log files.
    print("\n".join(lines), flush=True)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # HTTP clients log every request's full URL at INFO: callback, reference and
    # gateway base URLs may carry credentials (user:password@, presigned query
    # strings). Google's SDK logs on its own client (`httpx2`) and says "AFC is
    # enabled…" on every call (`google_genai.*`): its warnings are enough.
    for name in ("httpx", "httpcore", "httpx2", "google_genai"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            typer.echo(
                f"error: cannot listen on {host}:{port} ({exc.strerror}); "
                "choose another port with BANANASTAND_PORT=… (or --port)",
                err=True,
            )
            raise typer.Exit(2) from None


def _single_server_lock(settings: Settings) -> Any:
    """One server per SQLite data folder: a second one would run the same jobs."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.data_dir / "server.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        typer.echo(
            f"error: another bananastand server is already using {settings.data_dir.resolve()}; "
            "stop it, or give this one its own BANANASTAND_DATA_DIR",
            err=True,
        )
        raise typer.Exit(1) from None
    return handle


@app.command()
def worker() -> None:
    """Run generations for scale-out API servers (needs PostgreSQL and Redis settings)."""
    try:
        settings = Settings()
        settings.check_production()
        settings.check_mode()
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not settings.scale_out:
        typer.echo(
            "error: `bananastand worker` is for scale-out: set BANANASTAND_REDIS_URL and a "
            "PostgreSQL BANANASTAND_DATABASE_URL (the embedded server runs its own jobs)",
            err=True,
        )
        raise typer.Exit(2)
    _configure_logging(settings.log_level)
    asyncio.run(_work(settings))


async def _work(settings: Settings) -> None:
    from bananastand.container import Services

    services = Services.build(settings)
    await services.start("worker")
    gauges: asyncio.Task[None] | None = None
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        from bananastand import metrics

        start_http_server(settings.worker_metrics_port, addr=settings.host)
        gauges = asyncio.create_task(
            metrics.keep_fresh(
                services.generation.generations.queue_depth,
                every=settings.janitor_interval_seconds,
            )
        )
    print(f"Bananastand worker running ({settings.worker_concurrency} at a time)", flush=True)
    try:
        assert services.queue is not None  # a scale-out setting, checked above
        await services.queue.run_worker()
    finally:
        if gauges is not None:
            gauges.cancel()
        await services.stop()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    _run(lambda s: asyncio.sleep(0), creates=True)
    typer.echo("database is up to date")


# --- admin ----------------------------------------------------------------------


def _run(action: Callable[[Core], Awaitable[T]], *, creates: bool = False) -> T:
    """Run an admin action on the server's data. Only `creates` actions may start
    a new SQLite database: anything else there means the wrong folder."""
    settings = _settings()
    if settings.is_sqlite and not creates:
        path = Path(settings.resolved_database_url.split("///", 1)[1])
        if not path.exists():
            typer.echo(
                f"error: no database at {path.resolve()}: run this where the server keeps its "
                "data (the folder `make serve` runs in) or set BANANASTAND_DATA_DIR",
                err=True,
            )
            raise typer.Exit(1)

    async def main() -> T:
        core = Core.build(settings)
        try:
            await core.db.migrate()
            return await action(core)
        finally:
            await core.db.close()

    try:
        return asyncio.run(main())
    except BananastandError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _describe(core: Core) -> Callable[[Any], Awaitable[str]]:
    async def describe(account: Any) -> str:
        balance = await core.billing.balance(account.id)
        recharged = await core.billing.recharged_total(account.id)
        limit = account.concurrency_limit or core.settings.default_concurrency_limit
        return (
            f"account {account.id}  {account.email}\n"
            f"  credits: {balance}\n"
            f"  api access: {'on' if account.api_access else 'off'}"
            f"  (recharged {recharged} of {core.settings.api_access_threshold:g} "
            f"{core.settings.currency})\n"
            f"  pro: {'yes' if account.is_pro else 'no'}  admin: "
            f"{'yes' if account.is_admin else 'no'}\n"
            f"  concurrency limit: {limit}"
            f"{'' if account.concurrency_limit else ' (default)'}"
        )

    return describe


@admin.command("create-account")
def create_account(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    credits: Annotated[int, typer.Option(help="Credits to grant at once.")] = 0,
    api_access: Annotated[bool, typer.Option("--api-access", help="Enable API access.")] = False,
    pro: Annotated[bool, typer.Option("--pro", help="Set the pro flag.")] = False,
    is_admin: Annotated[bool, typer.Option("--admin", help="Give the admin role.")] = False,
    concurrency: Annotated[int | None, typer.Option(help="Concurrency limit.")] = None,
) -> None:
    """Create an account."""

    async def action(core: Core) -> str:
        account = await core.accounts.create(
            email=email,
            display_name=name,
            api_access=api_access,
            is_pro=pro,
            is_admin=is_admin,
            concurrency_limit=concurrency,
        )
        await core.admin.record(
            "cli",
            "create_account",
            account.id,
            email=account.email,
            api_access=api_access,
            is_pro=pro,
            is_admin=is_admin,
        )
        if credits:
            await core.admin.adjust("cli", account.id, credits=credits, reason="initial credits")
        return await _describe(core)(account)

    typer.echo(_run(action, creates=True))


@admin.command("list-accounts")
def list_accounts(search: Annotated[str, typer.Option(help="Filter by email.")] = "") -> None:
    """List accounts."""

    async def action(core: Core) -> list[str]:
        rows = []
        for account in await core.accounts.list(search=search, limit=1000):
            rows.append(  # the balance kept on the row: no query per account
                f"{account.id}  {account.email:<32} credits={account.balance:<8} "
                f"api={'on' if account.api_access else 'off'}"
            )
        return rows

    for row in _run(action):
        typer.echo(row)


@admin.command("show")
def show(account: str) -> None:
    """Show an account (by id or email)."""

    async def action(core: Core) -> str:
        return await _describe(core)(await core.accounts.get(account))

    typer.echo(_run(action))


@admin.command("recharge")
def recharge(
    account: str,
    amount: Annotated[str, typer.Argument(help="Money paid, e.g. 1000 or 99.50.")],
    credits: Annotated[int, typer.Option(help="Credits this recharge grants.")],
    currency: Annotated[str | None, typer.Option(help="Currency (default from settings).")] = None,
    note: Annotated[str, typer.Option(help="Free text kept with the recharge.")] = "",
) -> None:
    """Record a recharge: money paid and the credits it buys. Counts toward API access."""

    async def action(core: Core) -> str:
        target = await core.admin.recharge(
            "cli", account, money=amount, credits=credits, currency=currency, note=note
        )
        summary = await _describe(core)(await core.accounts.get(target.id))
        if currency and currency.upper() != core.settings.currency.upper():
            summary += (
                f"\nnote: recharges in {currency.upper()} do not count toward the API-access "
                f"threshold, which is in {core.settings.currency.upper()}"
            )
        return summary

    typer.echo(_run(action))


@admin.command("grant")
def grant(
    account: str,
    credits: int,
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
) -> None:
    """Grant credits."""

    async def action(core: Core) -> int:
        target = await core.accounts.get(account)
        return await core.admin.adjust("cli", target.id, credits=credits, reason=reason)

    typer.echo(f"credits: {_run(action)}")


@admin.command("deduct")
def deduct(
    account: str,
    credits: int,
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
) -> None:
    """Deduct credits (never below zero)."""

    async def action(core: Core) -> int:
        target = await core.accounts.get(account)
        if credits <= 0:
            raise InvalidRequest("Credits to deduct must be positive")
        return await core.admin.adjust("cli", target.id, credits=-credits, reason=reason)

    typer.echo(f"credits: {_run(action)}")


def _switch(value: str) -> bool:
    if value.lower() in ("on", "true", "yes", "1", "enable"):
        return True
    if value.lower() in ("off", "false", "no", "0", "disable"):
        return False
    raise typer.BadParameter("use on or off")


@admin.command("api-access")
def api_access(account: str, state: Annotated[str, typer.Argument(help="on or off")]) -> None:
    """Enable or disable an account's API access."""
    enabled = _switch(state)

    async def action(core: Core) -> str:
        return await _describe(core)(await core.admin.update("cli", account, api_access=enabled))

    typer.echo(_run(action))


@admin.command("pro")
def pro(account: str, state: Annotated[str, typer.Argument(help="on or off")]) -> None:
    """Set or clear an account's pro flag."""
    enabled = _switch(state)

    async def action(core: Core) -> str:
        return await _describe(core)(await core.admin.update("cli", account, is_pro=enabled))

    typer.echo(_run(action))


@admin.command("set-limit")
def set_limit(
    account: str,
    limit: Annotated[str, typer.Argument(help="Generations in progress at once, or 'default'.")],
) -> None:
    """Set an account's concurrency limit."""

    async def action(core: Core) -> str:
        if limit == "default":
            updated = await core.admin.update("cli", account, reset_concurrency_limit=True)
        elif limit.isascii() and limit.isdigit() and len(limit) <= 100:
            updated = await core.admin.update("cli", account, concurrency_limit=int(limit))
        else:
            raise typer.BadParameter(f"{limit[:40]!r}: use a whole number or 'default'")
        return await _describe(core)(updated)

    typer.echo(_run(action))


@admin.command("set-password")
def set_password(
    account: str,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="BANANASTAND_NEW_PASSWORD",
            help="Asked for when not given (or read from BANANASTAND_NEW_PASSWORD).",
        ),
    ],
) -> None:
    """Set an account's console password (signs out its console sessions)."""

    async def action(core: Core) -> str:
        target = await core.accounts.get(account)
        await core.console_auth.set_password(target.id, password)
        await core.admin.record("cli", "set_password", target.id)
        return f"password set for {target.email}"

    typer.echo(_run(action))


@admin.command("create-key")
def create_key(
    account: str, name: Annotated[str, typer.Option(help="A name to recognise it by.")] = ""
) -> None:
    """Create an API key; the full key is printed this once."""

    async def action(core: Core) -> str:
        target = await core.accounts.get(account)
        created = await core.accounts.create_key(target.id, name=name)
        await core.admin.record("cli", "create_key", target.id, prefix=created.key.prefix)
        return created.secret

    secret = _run(action)
    typer.echo("API key (shown only this once; store it now):", err=True)
    typer.echo(secret)


@admin.command("list-keys")
def list_keys(
    account: str,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List an account's API keys (prefixes only)."""

    async def action(core: Core) -> list[str]:
        target = await core.accounts.get(account)
        keys = await core.accounts.list_keys(target.id, include_revoked=all_keys)
        return [
            f"{k.id}  {k.prefix}…  {k.name or '-':<16} created {k.created_at:%Y-%m-%d %H:%M}"
            f"  last used {k.last_used_at.strftime('%Y-%m-%d %H:%M') if k.last_used_at else '-'}"
            f"{'  REVOKED' if k.revoked_at else ''}"
            for k in keys
        ]

    for row in _run(action) or ["(no keys)"]:
        typer.echo(row)


@admin.command("revoke-key")
def revoke_key(key: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke an API key."""

    async def action(core: Core) -> str:
        revoked = await core.accounts.revoke_key(key)
        await core.admin.record("cli", "revoke_key", revoked.account_id, prefix=revoked.prefix)
        return f"revoked {revoked.id} ({revoked.prefix}…)"

    typer.echo(_run(action))


@admin.command("ledger")
def ledger(
    account: str,
    limit: Annotated[int, typer.Option(help="Most recent rows.", min=1, max=100_000)] = 50,
) -> None:
    """Show an account's credit ledger, newest first."""

    async def action(core: Core) -> list[str]:
        target = await core.accounts.get(account)
        rows = await core.billing.ledger(target.id, limit=limit)
        balance = await core.billing.balance(target.id)
        lines = [f"balance: {balance}"]
        lines += [
            f"{e.created_at:%Y-%m-%d %H:%M:%S}  {e.amount:+6d}  {e.reason:<10} "
            f"{e.generation_id or ''} {e.note}".rstrip()
            + f"  (balance {e.balance_after})"
            for e in rows
        ]
        return lines

    for row in _run(action):
        typer.echo(row)


@admin.command("reconcile")
def reconcile() -> None:
    """Check every account's balance against its ledger; exit 1 naming any mismatch."""

    async def action(core: Core) -> tuple[int, list[Mismatch]]:
        return await core.accounts.count(), await core.billing.reconcile()

    accounts, mismatches = _run(action)
    for m in mismatches:
        last = "" if m.last_balance_after is None else f", newest entry says {m.last_balance_after}"
        typer.echo(
            f"MISMATCH {m.email} ({m.account_id}): balance {m.balance}, "
            f"ledger sum {m.ledger_sum}{last}",
            err=True,
        )
    if mismatches:
        typer.echo(f"{len(mismatches)} of {accounts} accounts do not reconcile", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: all {accounts} accounts reconcile (balance = sum of the ledger)")


@admin.command("migrate-storage")
def migrate_storage(
    source: Annotated[
        Path | None,
        typer.Option(help="Folder to copy from. Default: `data_dir/files`."),
    ] = None,
) -> None:
    """Copy the local folder's images and reference images into the object store of
    BANANASTAND_STORAGE_URL, each verified; safe to run again (it resumes)."""
    from bananastand.errors import StorageUnavailable
    from bananastand.object_storage import ObjectStorage
    from bananastand.storage import CopyReport, LocalStorage, copy_all

    settings = _settings()
    if not settings.storage_url:
        typer.echo("error: set BANANASTAND_STORAGE_URL to the bucket to copy into", err=True)
        raise typer.Exit(2)
    folder = source or settings.data_dir / "files"
    if not folder.is_dir():
        typer.echo(f"error: no folder {folder}", err=True)
        raise typer.Exit(2)
    target = ObjectStorage.from_settings(settings)

    def progress(report: CopyReport) -> None:
        typer.echo(f"  … {report.copied} copied, {report.already} already there", err=True)

    typer.echo(f"copying {folder} into {target.name}")
    try:
        report = asyncio.run(copy_all(LocalStorage(folder), target, progress=progress))
    except StorageUnavailable:
        typer.echo(
            "error: the object store could not be reached; run the command again to resume",
            err=True,
        )
        raise typer.Exit(1) from None
    for key in report.failed:
        typer.echo(f"MISMATCH {key}: read back different bytes", err=True)
    typer.echo(
        f"{report.copied} copied, {report.already} already there, {len(report.failed)} failed"
    )
    if report.failed:
        raise typer.Exit(1)


from bananastand.client_cli import register as _register_client  # noqa: E402

_register_client(app)


def main() -> None:
    app(prog_name="bananastand")


if __name__ == "__main__":
    main()
