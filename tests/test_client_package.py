"""The client as a package: a curated `__all__`, `py.typed`, and no server in its
imports (`pip install bananastand` is the client alone)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import bananastand
import bananastand.client
from bananastand.client import _errors, _http, _types

SERVER_PACKAGES = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "PIL",
    "numpy",
    "redis",
    "jinja2",
)


def test_all_is_every_public_name_and_no_internal_one() -> None:
    exported = set(bananastand.client.__all__)
    assert len(exported) == len(bananastand.client.__all__)  # no duplicates
    assert all(not name.startswith("_") for name in exported)
    for name in exported:
        assert hasattr(bananastand.client, name), name
    public = {
        name
        for module in (_errors, _http, _types)
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert public - exported == set(), "public but not exported"
    assert {n for n in dir(bananastand.client) if not n.startswith("_")} - exported <= {
        "annotations"
    } | {m.__name__.rpartition(".")[2] for m in (_errors, _http, _types)}


def test_the_package_is_typed() -> None:
    assert (Path(bananastand.__file__).parent / "py.typed").is_file()


def test_the_client_and_its_cli_import_without_the_server() -> None:
    blocker = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {SERVER_PACKAGES!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        import bananastand.client, bananastand.client_cli
        from bananastand.client import Client, AsyncClient
        sys.argv = ["bananastand", "serve"]
        try:
            bananastand.client_cli.main()
        except SystemExit as exc:
            sys.exit(exc.code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert "pip install 'bananastand[server]'" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-c", blocker.replace('"serve"', '"--help"')],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    for command in ("generate", "history", "cancel", "poll", "serve"):
        assert command in helped.stdout
