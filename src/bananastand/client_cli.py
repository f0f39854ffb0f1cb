"""Client commands of `bananastand`: `generate`, `models`, `credits`, `poll`,
`cancel`, `history`; and `main`, the `bananastand` command itself, which works
with the client alone installed (the server's commands then say what to install).

They talk to a running server through `bananastand.client`. The server's URL
and API key come from `--base-url` / `--api-key` or `BANANASTAND_URL` /
`BANANASTAND_API_KEY`. The key is never printed. Saved image paths go to
stdout, one per line; progress and notes go to stderr; failures print
`error: <message>` and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from bananastand.client import Client, Generation, GenerationRecord, StreamEvent

# `bananastand.client.DEFAULT_BASE_URL` (the client, and httpx with it, is imported
# only when a client command runs: the admin commands start without it).
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

BaseUrl = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar="BANANASTAND_URL",
        help="Server URL.",
        rich_help_panel="Connection",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="BANANASTAND_API_KEY",
        help="API key (nb_…). Prefer the environment variable.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
OutDir = Annotated[Path, typer.Option("--out", help="Folder to save images in.")]


class CliMode(StrEnum):
    sync = "sync"
    stream = "stream"
    async_ = "async"


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def _client(base_url: str, api_key: str | None, *, need_key: bool = True) -> Iterator[Client]:
    from bananastand.client import AuthenticationError, BananastandClientError, Client

    if need_key and not api_key:
        raise _fail("no API key: pass --api-key or set BANANASTAND_API_KEY", 2)
    try:
        with Client(base_url, api_key) as client:
            yield client
    except AuthenticationError as exc:
        raise _fail(f"{exc} (check --api-key or BANANASTAND_API_KEY)") from None
    except BananastandClientError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:  # writing images
        raise _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


def _reference(value: str) -> str:
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise _fail(f"reference image not found: {value}", 2)
    from bananastand.client import file_to_data_url

    return file_to_data_url(path)


def _print_paths(paths: list[Path]) -> None:
    for path in paths:
        typer.echo(str(path))


def _finish_record(client: Client, record: GenerationRecord, out: Path | None) -> None:
    if record.processing_status == "failed":
        raise _fail(f"generation {record.id} failed: {record.error_message or 'unknown error'}")
    if out is None:
        for url in record.output_image_urls:
            typer.echo(url)
        return
    _print_paths(client.download(record, out))


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    model: Annotated[str | None, typer.Option(help="Model name (see `models`).")] = None,
    ratio: Annotated[str | None, typer.Option(help="Aspect ratio, e.g. 16:9.")] = None,
    quantity: Annotated[int | None, typer.Option(help="Images to make (1..4).")] = None,
    ref: Annotated[
        list[str] | None,
        typer.Option(help="Reference image: a local file or an http(s) URL. Repeatable."),
    ] = None,
    mode: Annotated[CliMode, typer.Option(help="sync, stream (progress bar) or async.")] = (
        CliMode.sync
    ),
    wait: Annotated[
        bool, typer.Option(help="async: wait for the result (else print the id).")
    ] = True,
    out: OutDir = Path("."),
    seed: Annotated[int | None, typer.Option(help="Seed, for repeatable output.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Run again with the same key (24 h): the first run's generation, not a "
            "second charge. Default: a fresh key for each run.",
        ),
    ] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Generate images, save them into --out and print their paths."""
    refs = [_reference(value) for value in ref or []]
    with _client(base_url, api_key) as client:
        if mode is CliMode.stream:
            events = client.stream(
                prompt,
                model=model,
                aspect_ratio=ratio,
                quantity=quantity,
                reference_image_urls=refs,
                seed=seed,
                previews=False,  # a progress bar shows no pictures
                idempotency_key=idempotency_key,
            )
            result = _stream_with_progress(events)
            _print_paths(client.download(result, out))
            return
        accepted = client.generate(
            prompt,
            model=model,
            aspect_ratio=ratio,
            quantity=quantity,
            reference_image_urls=refs,
            seed=seed,
            mode="async" if mode is CliMode.async_ else "sync",
            idempotency_key=idempotency_key,
        )
        if mode is CliMode.async_:
            if not wait:
                typer.echo(accepted.generation_id)
                return
            typer.echo(f"accepted {accepted.generation_id}; waiting…", err=True)
            _finish_record(client, client.wait(accepted.generation_id), out)
            return
        if accepted.warning or not accepted.success:
            raise _fail(f"{accepted.message or 'no image'} (generation {accepted.generation_id})")
        _print_paths(client.download(accepted, out))


def _stream_with_progress(events: Iterable[StreamEvent]) -> Generation:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    console = Console(stderr=True)
    final = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as progress:
        task = progress.add_task("Starting…", total=100)
        for event in events:
            progress.update(task, completed=event.progress, description=event.message)
            if event.is_final:
                final = event
    from bananastand.client import Generation

    if final is None or final.data is None:
        raise _fail("the stream ended without a result")
    data = final.data
    if final.type == "error" or not data.success:
        raise _fail(data.error or final.message or "generation failed")
    return Generation(
        generation_id=data.generation_id or "image",
        success=True,
        image_urls=data.image_urls,
        credits_used=data.credits_used,
        remaining_credits=data.remaining_credits,
    )


def models(base_url: BaseUrl = DEFAULT_BASE_URL) -> None:
    """List the server's models and their costs (no key needed)."""
    from rich.console import Console
    from rich.table import Table

    with _client(base_url, None, need_key=False) as client:
        rows = client.models()
    table = Table("name", "display name", "credits", "image input", "aspect ratio", "pro")
    for m in rows:
        table.add_row(
            m.name,
            m.display_name,
            str(m.credits_cost),
            "yes" if m.supports_image_input else "no",
            "yes" if m.supports_aspect_ratio else "no",
            "yes" if m.requires_pro else "no",
        )
    Console(width=max(100, Console().width)).print(table)


def credits(base_url: BaseUrl = DEFAULT_BASE_URL, api_key: ApiKey = None) -> None:
    """Print the account's credit balance."""
    with _client(base_url, api_key) as client:
        typer.echo(str(client.credits()))


def poll(
    generation_id: Annotated[str, typer.Argument(metavar="ID", help="The generation id.")],
    wait: Annotated[bool, typer.Option(help="Wait until it is completed or failed.")] = False,
    timeout: Annotated[float, typer.Option(help="--wait: give up after this many seconds.")] = (
        600.0
    ),
    out: Annotated[
        Path | None, typer.Option("--out", help="Save the images here (else print URLs).")
    ] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a generation's status; with --wait, wait for it; with --out, save its images."""
    with _client(base_url, api_key) as client:
        record = client.wait(generation_id, timeout=timeout) if wait else client.get(generation_id)
        typer.echo(f"{record.id}: {record.processing_status}", err=True)
        if record.processing_status == "processing":
            return
        _finish_record(client, record, out)


def cancel(
    generation_id: Annotated[str, typer.Argument(metavar="ID", help="The generation id.")],
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a waiting or running generation; what it did not make is refunded."""
    with _client(base_url, api_key) as client:
        answer = client.cancel(generation_id)
    typer.echo(f"{answer.record.id}: {answer.record.processing_status}", err=True)
    typer.echo(answer.message)


def history(
    limit: Annotated[int, typer.Option(help="Generations to show (newest first).")] = 20,
    before: Annotated[
        str | None, typer.Option(help="Show those older than this generation id.")
    ] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """List the account's generations, newest first, one per line:
    id, status, credits, images, model, created, prompt."""
    if limit < 1:
        raise _fail("--limit must be 1 or more", 2)
    shown = 0
    with _client(base_url, api_key) as client:
        while shown < limit:
            page = client.list_generations(limit=min(limit - shown, 100), before=before)
            for record in page.records:
                prompt = " ".join(record.prompt.split())
                prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
                typer.echo(
                    "\t".join(
                        (
                            record.id,
                            record.processing_status,
                            str(record.credits_used),
                            str(len(record.output_image_urls)),
                            record.model_used,
                            record.created_at,
                            prompt,
                        )
                    )
                )
            shown += len(page.records)
            if page.next_before is None:
                return
            before = page.next_before
    typer.echo(f"more: --before {before}", err=True)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `bananastand` app."""
    app.command("generate")(generate)
    app.command("models")(models)
    app.command("credits")(credits)
    app.command("poll")(poll)
    app.command("cancel")(cancel)
    app.command("history")(history)


# The server's distributions: with none of them installed, `bananastand` is the client.
SERVER_PACKAGES = frozenset(
    {"fastapi", "sqlalchemy", "alembic", "pydantic_settings", "PIL", "numpy"}
    | {"granian", "uvicorn", "uvloop", "redis", "prometheus_client", "jinja2", "argon2"}
    | {"multipart", "python_multipart", "starlette"}
)
SERVER_COMMANDS = ("serve", "worker", "migrate", "admin")
INSTALL_SERVER = "pip install 'bananastand[server]'"


def _client_only_app(missing: str) -> typer.Typer:
    app = typer.Typer(
        no_args_is_help=True,
        help=f"Bananastand's client commands (the server is not installed: {INSTALL_SERVER}).",
    )

    def needs_server(ctx: typer.Context) -> NoReturn:
        typer.echo(
            f"error: `bananastand {ctx.info_name}` needs the server, which is not installed "
            f"(no module {missing!r}): {INSTALL_SERVER}",
            err=True,
        )
        raise typer.Exit(3)

    for name in SERVER_COMMANDS:
        app.command(
            name,
            help=f"Needs the server: {INSTALL_SERVER}",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=False,
        )(needs_server)
    register(app)
    return app


def main() -> None:
    """`bananastand`: every command with the server installed, else the client's."""
    try:
        from bananastand.server_cli import app
    except ModuleNotFoundError as exc:
        root = (exc.name or "").partition(".")[0]
        if root not in SERVER_PACKAGES:
            raise
        app = _client_only_app(root)
    app(prog_name="bananastand")
