"""Bananastand against its peers, side by side in one run on one machine.

    python bench/bench_gateway.py            # everything (about 10 minutes)
    python bench/bench_gateway.py --quick    # peers and hot paths only, shorter runs

Measured, each on its own single process, with wrk at 8 and 32 connections:

- floor: a bare Starlette GET on uvicorn (`peers/floor.py`);
- a fake OpenAI images upstream called directly (`peers/upstream.py`);
- LiteLLM's proxy in front of that upstream (installed from PyPI into
  `bench/.peers`, a bench-only environment; `LITELLM_LOCAL_MODEL_COST_MAP=True`
  keeps it offline);
- Bananastand (embedded default) with `gpt-image-1` on its OpenAI backend pointed
  at the same upstream: `POST /v1/images/generations`, sync `POST /api/v1/generate`,
  async submit, poll, `/credits`, a 400 for an empty body and `/models`.

Then: flat cost with history (one account with 1,000,000 ledger rows and 500,000
generations against a fresh one, one connection), 2,000 concurrent SSE streams
(slow built-in model: memory per stream, every stream's final event),
`bananastand admin list-accounts` wall time, and async submit scaled out
(PostgreSQL + Redis + one worker). Reports RPS, p50/p99, the server's CPU ms per
request (from /proc) and the ratios the performance targets are written in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH,
    ROOT,
    Load,
    Result,
    Server,
    cpu_seconds,
    free_port,
    granian,
    http_json,
    rss_bytes,
    start,
    uvicorn,
    wrk,
)

PEERS_ENV = BENCH / ".peers"
PEERS_PYTHON = PEERS_ENV / "bin" / "python"
BANANASTAND = [sys.executable, "-m", "bananastand"]
MODEL = "gpt-image-1"
UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_KEY = "sk-bench-litellm"
STREAM_LATENCY_SECONDS = 45  # longer than opening every stream takes
# The embedded server's models: the OpenAI one in front of the fake upstream, and a
# slow built-in one whose jobs only wait (for measuring acceptance alone).
BENCH_CATALOG = """
[[models]]
name = "gpt-image-1"
displayName = "GPT Image 1"
backend = "openai"
backendModel = "gpt-image-1"
creditsCost = 3
supportsImageInput = true
supportsAspectRatio = true
aspectRatios = ["1:1", "3:2", "2:3"]
timeoutSeconds = 240

[models.options]
quality = "auto"
outputFormat = "png"

[[models]]
name = "slow"
displayName = "Slow"
backend = "builtin"
backendModel = "builtin-v1"
creditsCost = 1
supportsImageInput = false
supportsAspectRatio = false
timeoutSeconds = 7200
"""


# --- peers --------------------------------------------------------------------------
def ensure_peers_env() -> None:
    """LiteLLM lives in its own environment: never a runtime or test dependency."""
    if (PEERS_ENV / "bin" / "litellm").exists():
        return
    print("installing LiteLLM into bench/.peers (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_ENV)], check=True)
    subprocess.run(
        [str(PEERS_PYTHON), "-m", "pip", "install", "--quiet", "litellm[proxy]", "uvicorn"],
        check=True,
    )


def start_litellm(upstream: Server, workdir: Path) -> Server:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream.url}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
    )
    port = free_port()
    return start(
        "litellm",
        [str(PEERS_ENV / "bin" / "litellm"), "--config", str(config), "--port", str(port)],
        url=f"http://127.0.0.1:{port}",
        ready_path="/health/liveliness",
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
        cwd=workdir,
        timeout=180,
    )


# --- Bananastand --------------------------------------------------------------------
@dataclass
class Bananastand:
    server: Server
    env: dict[str, str]
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def admin(self, *args: str) -> str:
        run = subprocess.run(
            [*BANANASTAND, "admin", *args],
            env={**os.environ, **self.env},
            cwd=self.env["BANANASTAND_DATA_DIR"],
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout


def bananastand_env(data_dir: Path, upstream: Server, **extra: str) -> dict[str, str]:
    return {
        "BANANASTAND_DATA_DIR": str(data_dir),
        "BANANASTAND_LOG_LEVEL": "warning",
        "BANANASTAND_DEMO_CREDITS": "1000000000",
        "BANANASTAND_ASYNC_QUEUE_SIZE": "1000000",
        "BANANASTAND_OPENAI_API_KEY": UPSTREAM_KEY,
        "BANANASTAND_OPENAI_BASE_URL": f"{upstream.url}/v1",
        "BANANASTAND_OPENAI_CONCURRENCY": "64",
        **extra,
    }


def new_key(env: dict[str, str], email: str) -> str:
    """An account with API access, a generous limit and credits; returns its key."""
    cwd = env["BANANASTAND_DATA_DIR"]
    full = {**os.environ, **env}

    def admin(*args: str) -> str:
        return subprocess.run(
            [*BANANASTAND, "admin", *args],
            env=full,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    admin("create-account", email, "--api-access")
    admin("set-limit", email, "100000")
    admin("grant", email, "1000000000", "--reason", "benchmark")
    out = admin("create-key", email)
    return next(word for word in out.split() if word.startswith("nb_"))


def start_bananastand(env: dict[str, str], *, name: str = "bananastand") -> Server:
    port = free_port()
    return start(
        name,
        [*BANANASTAND, "serve", "--port", str(port)],
        url=f"http://127.0.0.1:{port}",
        ready_path="/healthz",
        env=env,
        cwd=Path(env["BANANASTAND_DATA_DIR"]),
        timeout=180,
    )


def wait_idle(app: Bananastand, timeout: float = 300) -> None:
    """Until no async generation waits (so one phase's backlog does not bill the next)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with __import__("urllib.request").request.urlopen(app.server.url + "/metrics") as m:
            text = m.read().decode()
        depth = next(
            (
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("bananastand_queue_depth ")
            ),
            0.0,
        )
        if depth == 0:
            return
        time.sleep(0.5)


# --- history ------------------------------------------------------------------------
def seed_history(database: Path, account_id: str, *, ledger_rows: int, generations: int) -> str:
    """Give one account a long past, straight into SQLite: `generations` finished
    generations and `ledger_rows` ledger entries (charges and refunds). Keeps any
    balance kept beside the ledger equal to its sum. Returns a generation id deep in
    the history (for deep paging)."""
    db = sqlite3.connect(database)
    columns = {row[1] for row in db.execute("PRAGMA table_info(ledger_entries)")}
    account_columns = {row[1] for row in db.execute("PRAGMA table_info(accounts)")}
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=89) / generations

    def when(index: int) -> str:
        return (start + step * index).strftime("%Y-%m-%d %H:%M:%S.%f")

    balance = int(
        db.execute(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account_id = ?",
            (account_id,),
        ).fetchone()[0]
    )
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO generations (id, account_id, api_key_id, prompt, model, mode, "
        "aspect_ratio, quantity, reference_urls, seed, attempts, state, unit_cost, "
        "credits_charged, credits_used, created_at, started_at, finished_at) VALUES "
        "(?, ?, NULL, 'an old picture', 'nano-banana', 'async', 'default', 1, '[]', 1, 1, "
        "'completed', 1, 1, 1, ?, ?, ?)",
        ((f"h{i:023d}", account_id, when(i), when(i), when(i)) for i in range(generations)),
    )
    rows = []
    for i in range(ledger_rows):
        generation = i // 2 if i // 2 < generations else None
        amount = -1 if i % 2 == 0 else 1
        balance += amount
        row = [
            account_id,
            amount,
            "generation" if amount < 0 else "refund",
            f"h{generation:023d}" if generation is not None else None,
            when(min(i // 2, generations - 1)),
        ]
        if "balance_after" in columns:
            row.append(balance)
        rows.append(row)
    extra = ", balance_after" if "balance_after" in columns else ""
    marks = ", ?" if extra else ""
    db.executemany(
        f"INSERT INTO ledger_entries (account_id, amount, reason, generation_id, note, "
        f"created_at{extra}) VALUES (?, ?, ?, ?, '', ?{marks})",
        rows,
    )
    if "balance" in account_columns:
        db.execute("UPDATE accounts SET balance = ? WHERE id = ?", (balance, account_id))
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return f"h{generations // 5:023d}"


def account_id_of(database: Path, email: str) -> str:
    db = sqlite3.connect(database)
    try:
        return str(db.execute("SELECT id FROM accounts WHERE email = ?", (email,)).fetchone()[0])
    finally:
        db.close()


# --- streams ------------------------------------------------------------------------
@dataclass
class _StreamWatch:
    count: int
    opened: int = 0
    all_open: asyncio.Event = field(default_factory=asyncio.Event)
    first_final: asyncio.Event = field(default_factory=asyncio.Event)


async def _one_stream(port: int, key: str, watch: _StreamWatch) -> int:
    """Open one stream; return how many final events it carried (exactly 1 is right)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    body = json.dumps({"prompt": "a slow lighthouse", "mode": "stream", "selectedModel": "slow"})
    writer.write(
        (
            "POST /api/v1/generate HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    await writer.drain()
    finals = 0
    first = True
    try:
        while line := await reader.readline():
            if first and line.startswith(b"data: "):
                first = False
                watch.opened += 1
                if watch.opened == watch.count:
                    watch.all_open.set()
            if line.startswith(b"data: ") and (
                b'"type":"complete"' in line or b'"type":"error"' in line
            ):
                finals += 1
                watch.first_final.set()
    finally:
        writer.close()
    return finals


async def _streams(port: int, key: str, count: int, pid: int) -> dict[str, float]:
    baseline = rss_bytes(pid)
    watch = _StreamWatch(count)
    started = time.monotonic()
    tasks = [asyncio.create_task(_one_stream(port, key, watch)) for _ in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch.all_open.wait(), 300)
    open_after = time.monotonic() - started
    # Memory with every stream open and waiting: no render has started yet (the
    # model's latency is longer than opening them all takes).
    peak = rss_bytes(pid)
    finals = await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": count,
        "all_open_after_s": round(open_after, 1),
        "all_ended_after_s": round(time.monotonic() - started, 1),
        "rss_per_open_stream_kb": round((peak - baseline) / count / 1024, 1),
        "rss_before_mb": round(baseline / 2**20, 1),
        "rss_all_open_mb": round(peak / 2**20, 1),
        "streams_with_exactly_one_final_event": sum(1 for f in finals if f == 1),
        "streams_failed": sum(1 for f in finals if isinstance(f, BaseException)),
    }


def bench_streams(workdir: Path, upstream: Server, count: int) -> dict[str, float]:
    """`count` concurrent SSE streams of a slow built-in model on one API process."""
    catalog = workdir / "slow.toml"
    catalog.write_text(
        '[[models]]\nname = "slow"\ndisplayName = "Slow"\nbackend = "builtin"\n'
        'backendModel = "builtin-v1"\ncreditsCost = 1\ntimeoutSeconds = 600\n'
        "supportsImageInput = false\nsupportsAspectRatio = false\n"
    )
    data = workdir / "streams"
    data.mkdir()
    env = bananastand_env(
        data,
        upstream,
        BANANASTAND_CATALOG_PATH=str(catalog),
        BANANASTAND_BUILTIN_LATENCY_SECONDS=str(STREAM_LATENCY_SECONDS),
        BANANASTAND_DEMO_ACCOUNT="false",
    )
    subprocess.run(
        [*BANANASTAND, "migrate"],
        env={**os.environ, **env},
        cwd=data,
        check=True,
        capture_output=True,
    )
    key = new_key(env, "streams@bench.local")
    server = start_bananastand(env, name="bananastand-streams")
    try:
        return asyncio.run(_streams(int(server.url.rsplit(":", 1)[1]), key, count, server.pid))
    finally:
        server.stop()


# --- scale-out ----------------------------------------------------------------------
def bench_scale_out(
    workdir: Path, upstream: Server, seconds: float, conns: list[int], floor_rps: float
) -> list[Result]:
    database = f"bench_{os.getpid()}"
    subprocess.run(
        ["psql", "-U", "postgres", "-h", "127.0.0.1", "-c", f"CREATE DATABASE {database}"],
        check=True,
        capture_output=True,
    )
    data = workdir / "scale"
    data.mkdir()
    env = bananastand_env(
        data,
        upstream,
        BANANASTAND_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1/{database}",
        BANANASTAND_REDIS_URL="redis://127.0.0.1:6379/0",
        BANANASTAND_REDIS_PREFIX=f"bench{os.getpid()}",
        BANANASTAND_SIGNING_SECRET="bench-signing-secret-bench-signing-secret",
        BANANASTAND_DEMO_ACCOUNT="false",
        BANANASTAND_WORKER_CONCURRENCY="32",
    )
    servers: list[Server] = []
    try:
        subprocess.run(
            [*BANANASTAND, "migrate"],
            env={**os.environ, **env},
            cwd=data,
            check=True,
            capture_output=True,
        )
        key = new_key(env, "scale@bench.local")
        api = start_bananastand(env, name="bananastand-scale-api")
        servers.append(api)
        worker_port = free_port()
        servers.append(
            start(
                "bananastand-worker",
                [*BANANASTAND, "worker"],
                url=f"http://127.0.0.1:{worker_port}",
                ready_path="/metrics",
                env={**env, "BANANASTAND_WORKER_METRICS_PORT": str(worker_port)},
                cwd=data,
            )
        )
        app = Bananastand(api, env, key)
        load = Load(
            "/api/v1/generate",
            "POST",
            json.dumps({"prompt": "a cat", "selectedModel": MODEL, "mode": "async"}),
            {**app.auth, "Content-Type": "application/json"},
        )
        results = []
        for c in conns:
            results.append(
                wrk(api, load, label="scale-out async submit", connections=c, seconds=seconds)
            )
        return results
    finally:
        for server in servers:
            server.stop()
        subprocess.run(
            [
                "psql",
                "-U",
                "postgres",
                "-h",
                "127.0.0.1",
                "-c",
                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
            ],
            capture_output=True,
        )
        subprocess.run(
            ["redis-cli", "--scan", "--pattern", f"bench{os.getpid()}*"], capture_output=True
        )


# --- the run ------------------------------------------------------------------------
def table(results: list[Result], floor: dict[int, float], litellm: dict[int, float]) -> str:
    lines = [
        "| path | conns | RPS | p50 ms | p99 ms | server CPU ms/req | share of floor RPS "
        "| x LiteLLM RPS | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        share = r.rps / floor[r.connections] if floor.get(r.connections) else 0
        vs = r.rps / litellm[r.connections] if litellm.get(r.connections) else 0
        lines.append(
            f"| {r.label} | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.cpu_ms:.2f} | {share:.3f} | {vs:.1f} | {r.non_2xx} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument("--connections", default="8,32", help="wrk connections, comma-separated")
    parser.add_argument("--quick", action="store_true", help="peers and hot paths only")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM peer")
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--generations", type=int, default=500_000)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: peers,paths,history,streams,admin,scale",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "artifacts" / "bench" / "gateway.json")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    conns = [int(c) for c in args.connections.split(",")]
    sections = (
        set(args.only.split(","))
        if args.only
        else {"peers", "paths", "history", "streams", "admin", "scale"}
    )
    if args.quick:
        sections &= {"peers", "paths"}
        args.seconds = min(args.seconds, 4.0)
    seconds = args.seconds
    report: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()})",
    }
    print(f"# Bananastand gateway benchmark, {report['date']}, {report['machine']}\n", flush=True)
    results: list[Result] = []
    floor: dict[int, float] = {}
    litellm: dict[int, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    upstream = uvicorn("upstream", "upstream:app", cwd=BENCH / "peers")
    up_load = Load(
        "/v1/images/generations",
        "POST",
        json.dumps({"model": MODEL, "prompt": "a cat"}),
        {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"},
    )
    stopping: list[Server] = [upstream]
    try:
        # Peers first, then Bananastand, each alone on the machine while measured.
        floor_server = uvicorn("floor", "floor:app", cwd=BENCH / "peers")
        for c in conns:
            r = wrk(
                floor_server,
                Load("/"),
                label="floor: bare Starlette GET (uvicorn)",
                connections=c,
                seconds=seconds,
            )
            floor[c] = r.rps
            results.append(r)
        floor_server.stop()
        # The same floor on Granian, the server Bananastand embeds: how much of a
        # difference the server alone makes (the shares below are of uvicorn's floor).
        granian_floor = granian("floor-granian", "floor:app", cwd=BENCH / "peers")
        for c in conns:
            results.append(
                wrk(
                    granian_floor,
                    Load("/"),
                    label="floor on Granian (for reference)",
                    connections=c,
                    seconds=seconds,
                )
            )
        granian_floor.stop()
        for c in conns:
            results.append(
                wrk(
                    upstream,
                    up_load,
                    label="fake OpenAI upstream, direct",
                    connections=c,
                    seconds=seconds,
                )
            )
        if "peers" in sections and not args.no_litellm:
            ensure_peers_env()
            proxy = start_litellm(upstream, workdir)
            stopping.append(proxy)
            load = Load(
                "/v1/images/generations",
                "POST",
                json.dumps({"model": MODEL, "prompt": "a cat"}),
                {"Authorization": f"Bearer {LITELLM_KEY}", "Content-Type": "application/json"},
            )
            for c in conns:
                r = wrk(
                    proxy, load, label="LiteLLM proxy → upstream", connections=c, seconds=seconds
                )
                litellm[c] = r.rps
                results.append(r)
            proxy.stop()

        data = workdir / "embedded"
        data.mkdir()
        catalog = workdir / "catalog.toml"
        catalog.write_text(BENCH_CATALOG)
        env = bananastand_env(
            data,
            upstream,
            BANANASTAND_DEMO_ACCOUNT="false",
            BANANASTAND_CATALOG_PATH=str(catalog),
            BANANASTAND_DEFAULT_MODEL=MODEL,
            BANANASTAND_BUILTIN_LATENCY_SECONDS="3600",
        )
        subprocess.run(
            [*BANANASTAND, "migrate"],
            env={**os.environ, **env},
            cwd=data,
            check=True,
            capture_output=True,
        )
        key = new_key(env, "fresh@bench.local")
        history_key = ""
        deep = ""
        if "history" in sections:
            history_key = new_key(env, "history@bench.local")
            began = time.monotonic()
            deep = seed_history(
                data / "bananastand.db",
                account_id_of(data / "bananastand.db", "history@bench.local"),
                ledger_rows=args.ledger_rows,
                generations=args.generations,
            )
            print(
                f"seeded {args.ledger_rows:,} ledger rows and {args.generations:,} "
                f"generations in {time.monotonic() - began:.0f} s",
                flush=True,
            )
        server = start_bananastand(env)
        stopping.append(server)
        app = Bananastand(server, env, key)
        json_headers = {**app.auth, "Content-Type": "application/json"}
        status, first = http_json(
            server.url + "/api/v1/generate",
            method="POST",
            body={"prompt": "a cat", "selectedModel": MODEL},
            headers=json_headers,
        )
        if status != 200:
            raise SystemExit(f"Bananastand could not generate through the upstream: {first}")
        generation_id = first["generationId"]  # type: ignore[index]
        paths = [
            (
                "Bananastand POST /v1/images/generations",
                Load(
                    "/v1/images/generations",
                    "POST",
                    json.dumps({"model": MODEL, "prompt": "a cat"}),
                    json_headers,
                ),
            ),
            (
                "Bananastand sync POST /api/v1/generate",
                Load(
                    "/api/v1/generate",
                    "POST",
                    json.dumps({"prompt": "a cat", "selectedModel": MODEL}),
                    json_headers,
                ),
            ),
            (
                "Bananastand async submit (this process runs the jobs too)",
                Load(
                    "/api/v1/generate",
                    "POST",
                    json.dumps({"prompt": "a cat", "selectedModel": MODEL, "mode": "async"}),
                    json_headers,
                ),
            ),
            (
                "Bananastand poll GET /api/v1/generate?id=",
                Load(f"/api/v1/generate?id={generation_id}", headers=app.auth),
            ),
            ("Bananastand GET /api/v1/credits", Load("/api/v1/credits", headers=app.auth)),
            ("Bananastand 400 (empty body)", Load("/api/v1/generate", "POST", "", app.auth)),
            ("Bananastand GET /api/v1/models", Load("/api/v1/models")),
        ]
        # Last: accepting alone. The jobs of a slow model wait in the queue (a few run
        # at a time, sleeping), so the server does nothing but answer submissions.
        accept_only = (
            "Bananastand async submit (accepting only: jobs wait in the queue)",
            Load(
                "/api/v1/generate",
                "POST",
                json.dumps({"prompt": "a cat", "selectedModel": "slow", "mode": "async"}),
                json_headers,
            ),
        )
        if "paths" in sections:
            for label, load in paths:
                for c in conns:
                    results.append(wrk(server, load, label=label, connections=c, seconds=seconds))
                    wait_idle(app)
            for c in conns:
                results.append(
                    wrk(
                        server, accept_only[1], label=accept_only[0], connections=c, seconds=seconds
                    )
                )
        print(table(results, floor, litellm), flush=True)
        report["results"] = [r.as_dict() for r in results]

        if "history" in sections:
            growth: dict[str, dict[str, float]] = {}
            history = Bananastand(server, env, history_key)
            _, recent = http_json(
                server.url + "/api/v1/generate",
                method="POST",
                body={"prompt": "a cat", "selectedModel": MODEL},
                headers={**history.auth, "Content-Type": "application/json"},
            )
            recent_id = recent["generationId"]  # type: ignore[index]
            checks = [
                ("GET /credits", lambda a, _g: Load("/api/v1/credits", headers=a.auth)),
                ("poll", lambda a, g: Load(f"/api/v1/generate?id={g}", headers=a.auth)),
                (
                    "first history page",
                    lambda a, _g: Load("/api/v1/generations?limit=20", headers=a.auth),
                ),
                (
                    "sync generation",
                    lambda a, _g: Load(
                        "/api/v1/generate",
                        "POST",
                        json.dumps({"prompt": "a cat", "selectedModel": MODEL}),
                        {**a.auth, "Content-Type": "application/json"},
                    ),
                ),
            ]
            for name, make in checks:
                # Warmed up first; then fresh, history, fresh again (the better of the
                # two fresh runs): the machine's noise should not pass for growth.
                wrk(server, make(app, generation_id), label=name, connections=1, seconds=1)
                fresh = wrk(
                    server, make(app, generation_id), label=name, connections=1, seconds=seconds / 2
                )
                old = wrk(
                    server, make(history, recent_id), label=name, connections=1, seconds=seconds / 2
                )
                again = wrk(
                    server, make(app, generation_id), label=name, connections=1, seconds=seconds / 2
                )
                fresh = min(fresh, again, key=lambda r: r.p50_ms)
                growth[name] = {
                    "fresh_p50_ms": fresh.p50_ms,
                    "history_p50_ms": old.p50_ms,
                    "ratio": round(old.p50_ms / fresh.p50_ms, 2),
                }
            deep_load = Load(f"/api/v1/generations?limit=20&before={deep}", headers=history.auth)
            first_page = wrk(
                server,
                Load("/api/v1/generations?limit=20", headers=history.auth),
                label="first",
                connections=1,
                seconds=seconds / 2,
            )
            deep_page = wrk(server, deep_load, label="deep", connections=1, seconds=seconds / 2)
            growth["deep history page (400,000 back) vs first"] = {
                "fresh_p50_ms": first_page.p50_ms,
                "history_p50_ms": deep_page.p50_ms,
                "ratio": round(deep_page.p50_ms / first_page.p50_ms, 2),
            }
            print(
                f"\n## Flat cost with history ({args.ledger_rows:,} ledger rows, "
                f"{args.generations:,} generations; p50 at 1 connection)\n"
            )
            print("| request | fresh account ms | account with history ms | ratio |")
            print("|---|---|---|---|")
            for name, g in growth.items():
                print(
                    f"| {name} | {g['fresh_p50_ms']:.2f} | {g['history_p50_ms']:.2f} "
                    f"| {g['ratio']:.2f} |"
                )
            report["growth"] = growth
        server.stop()

        if "admin" in sections:
            times = []
            for _ in range(5):
                began = time.monotonic()
                subprocess.run(
                    [*BANANASTAND, "admin", "list-accounts"],
                    env={**os.environ, **env},
                    cwd=data,
                    check=True,
                    capture_output=True,
                )
                times.append(time.monotonic() - began)
            report["admin_list_accounts_s"] = round(statistics.median(times), 3)
            print(
                f"\n`bananastand admin list-accounts`: {statistics.median(times):.2f} s "
                "(median of 5)",
                flush=True,
            )

        if "streams" in sections:
            streams = bench_streams(workdir, upstream, args.streams)
            report["streams"] = streams
            print(
                f"\n## {args.streams} concurrent SSE streams "
                f"(built-in model, {STREAM_LATENCY_SECONDS} s)\n"
            )
            print(json.dumps(streams, indent=2), flush=True)

        if "scale" in sections:
            scaled = bench_scale_out(workdir, upstream, seconds, conns, floor.get(conns[-1], 0))
            report["scale_out"] = [r.as_dict() for r in scaled]
            print("\n## Scale-out (PostgreSQL + Redis + one worker)\n")
            print(table(scaled, floor, litellm), flush=True)
    finally:
        for s in stopping:
            s.stop()
        report["cpu_self_s"] = round(cpu_seconds(os.getpid()), 1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
