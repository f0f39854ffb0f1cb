"""Client commands of `bananastand`: `generate`, `models`, `credits`, `poll`.

They talk to a running server through `bananastand.client`. The server's URL
and API key come from `--base-url` / `--api-key` or `BANANASTAND_URL` /
`BANANASTAND_API_KEY`. The key is never printed. Saved image paths go to
stdout, one per line; progress and notes go to stderr; failures print
`error: <message>` and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from bananastand.client import Client, Generation, GenerationRecord

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
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Generate images, save them into --out and print their paths."""
    refs = [_reference(value) for value in ref or []]
    options = {
        "model": model,
        "aspect_ratio": ratio,
        "quantity": quantity,
        "reference_image_urls": refs,
        "seed": seed,
    }
    with _client(base_url, api_key) as client:
        if mode is CliMode.stream:
            result = _stream_with_progress(client, prompt, options)
            _print_paths(client.download(result, out))
        elif mode is CliMode.async_:
            accepted = client.generate(prompt, mode="async", **options)  # type: ignore[arg-type]
            if not wait:
                typer.echo(accepted.generation_id)
                return
            typer.echo(f"accepted {accepted.generation_id}; waiting…", err=True)
            _finish_record(client, client.wait(accepted.generation_id), out)
        else:
            result = client.generate(prompt, mode="sync", **options)  # type: ignore[arg-type]
            if result.warning or not result.success:
                raise _fail(f"{result.message or 'no image'} (generation {result.generation_id})")
            _print_paths(client.download(result, out))


def _stream_with_progress(client: Client, prompt: str, options: dict[str, object]) -> Generation:
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
        for event in client.stream(prompt, **options):  # type: ignore[arg-type]
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


def register(app: typer.Typer) -> None:
    """Add the client commands to the `bananastand` app."""
    app.command("generate")(generate)
    app.command("models")(models)
    app.command("credits")(credits)
    app.command("poll")(poll)
