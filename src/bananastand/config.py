"""One typed settings object. Nothing else in the package reads the environment.

Every setting is read from an environment variable named `BANANASTAND_<NAME>`
(or from a `.env` file in the working directory). The README's configuration
reference is generated from the field descriptions below; a test fails when
the two drift apart.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CreditPackage(BaseModel):
    """One package on sale: `price` in the Stripe currency buys `credits`."""

    model_config = ConfigDict(frozen=True)

    price: Decimal = Field(gt=0, le=Decimal(10**9), decimal_places=2)
    credits: int = Field(gt=0, le=10**12)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BANANASTAND_", env_file=".env", extra="ignore", frozen=True
    )

    # --- serving ---------------------------------------------------------
    environment: str = Field(
        "dev", description="`dev` or `production`; production refuses unsafe defaults."
    )
    host: str = Field("127.0.0.1", description="Address `bananastand serve` binds.")
    port: int = Field(8000, description="Port `bananastand serve` listens on.")
    public_base_url: str = Field(
        "",
        description="Absolute base URL clients reach this server at; image URLs are built "
        "from it. Empty: `http://{host}:{port}`.",
    )
    data_dir: Path = Field(
        Path("data"), description="Folder for the SQLite database, images and the signing key."
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`. Empty: a SQLite "
        "file in `data_dir`.",
    )
    signing_secret: str = Field(
        "",
        description="Secret that signs image URLs. Empty in dev: generated once and kept in "
        "`data_dir`. Required in production.",
    )
    max_body_bytes: int = Field(
        30 * 1024 * 1024, description="Largest request body accepted (413 above)."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=8192,
        description="Largest request head (request line and headers) accepted; a larger one "
        "is answered 431 and its connection closed.",
    )
    header_timeout_seconds: float = Field(
        30.0, gt=0, description="Time a client has to send a request's head."
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Time a client has to send a request's body, plus a second per 16 KiB "
        "received (a slow steady upload passes, a drip does not); 408 after.",
    )
    max_connections: int = Field(
        10_000,
        ge=1,
        description="Requests `bananastand serve` works on at once (open streams included); "
        "one more is answered 503 with Retry-After.",
    )
    log_level: str = Field("info", description="Log level of the server.")
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies trusted for X-Forwarded-For/-Proto (comma-separated IPs or CIDRs, "
        "`*` for any): the client address and scheme the console's limits and cookies use.",
    )

    # --- requests ---------------------------------------------------------
    catalog_path: Path | None = Field(
        None, description="Model catalogue (TOML). Empty: the catalogue shipped with the package."
    )
    default_model: str = Field(
        "nano-banana", description="Model used when `selectedModel` is absent."
    )
    max_prompt_length: int = Field(8000, description="Longest prompt accepted, in characters.")
    max_quantity: int = Field(4, description="Global cap on `quantity` (models may cap lower).")

    # --- accounts, keys, credits --------------------------------------------
    max_keys_per_account: int = Field(5, description="Live API keys one account may hold.")
    default_concurrency_limit: int = Field(
        1, description="Generations in progress per account, unless the account overrides it."
    )
    api_access_threshold: float = Field(
        1000, description="Cumulative recharge that turns API access on by itself."
    )
    currency: str = Field("CNY", description="Currency of recharges and of the threshold.")
    demo_account: bool = Field(
        True, description="On first start, create a demo account and print its API key once."
    )
    demo_credits: int = Field(100, description="Credits granted to the demo account.")

    # --- jobs ---------------------------------------------------------------
    async_queue_size: int = Field(
        100, description="Async generations allowed to wait; beyond it async requests get 503."
    )
    async_workers: int = Field(4, description="Async generations run at the same time.")
    stream_keepalive_seconds: float = Field(
        15.0, description="Interval of SSE keep-alive comments while a generation runs."
    )
    shutdown_grace_seconds: float = Field(
        10.0,
        description="On SIGTERM, how long open streams, sync requests and running "
        "generations may take to finish (workers then hand back what is left).",
    )
    default_duration_seconds: float = Field(
        5.0,
        description="Expected generation time before any was measured; feeds Retry-After.",
    )

    # --- images -------------------------------------------------------------
    image_ttl_seconds: int = Field(
        15 * 86400, ge=0, description="How long image URLs stay valid (seconds)."
    )
    sweep_interval_seconds: float = Field(
        3600.0, description="How often expired images are deleted from disk."
    )

    # --- object storage -------------------------------------------------------
    storage_url: str = Field(
        "",
        description="Where images and reference images are kept. Empty: files under "
        "`data_dir/files`. `s3://bucket/prefix` (S3 or an S3-compatible service), "
        "`gs://bucket/prefix` or `az://container/prefix`: an object store every process "
        "shares (scale-out across machines).",
    )
    storage_endpoint: str = Field(
        "",
        description="Endpoint of an S3-compatible service (MinIO, R2, Ceph), e.g. "
        "`https://minio.internal:9000`. Empty: AWS S3.",
    )
    storage_region: str = Field(
        "", description="S3 region. Empty: `AWS_REGION`, or `us-east-1` with an endpoint."
    )
    storage_access_key_id: str = Field(
        "",
        description="S3 access key id. Empty: the usual sources (`AWS_ACCESS_KEY_ID`, "
        "an instance role, a web identity).",
    )
    storage_secret_access_key: SecretStr = Field(
        SecretStr(""), description="S3 secret access key (with `storage_access_key_id`)."
    )
    storage_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest one object-store call may take, retries included; after it "
        "the request is answered 503 with Retry-After.",
    )
    storage_serve: Literal["stream", "redirect"] = Field(
        "stream",
        description="How image URLs are answered from an object store: `stream` the bytes "
        "through this server (HEAD, Range, 304), or `redirect` (307) to a short-lived "
        "presigned URL of the store.",
    )
    storage_presign_seconds: int = Field(
        300, ge=1, le=7 * 86400, description="Life of a presigned URL (`storage_serve=redirect`)."
    )

    # --- stream previews (extension) ------------------------------------------
    stream_previews: bool = Field(
        True,
        description="Stream-mode `status` events carry a small preview image "
        "(`data.previewImage`) from backends that can make one (diffusers, OpenAI partial "
        'images); a request turns them off with `"previews": false`.',
    )
    preview_max_side: int = Field(
        256, ge=16, le=2048, description="Longest side of a stream preview, in pixels."
    )
    preview_every_steps: int = Field(
        2,
        ge=1,
        description="A stream preview every this many denoising steps (diffusers); OpenAI "
        "models send one per partial image.",
    )
    preview_format: str = Field(
        "jpeg",
        pattern="^(jpeg|webp|png)$",
        description="Encoding of stream previews: `jpeg`, `webp` or `png`.",
    )

    # --- reference images ---------------------------------------------------
    reference_max_count: int = Field(16, description="Most reference images in one request.")
    reference_max_bytes: int = Field(
        20 * 1024 * 1024, description="Largest reference image, in bytes."
    )
    reference_max_pixels: int = Field(
        50_000_000, description="Largest reference image, in pixels (decompression bombs)."
    )
    reference_timeout_seconds: float = Field(
        10.0, description="Total time allowed to fetch one reference image."
    )
    reference_max_redirects: int = Field(3, description="Redirects followed per reference.")
    reference_allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs exempt from the private-address block of reference images and "
        'webhook `callbackUrl`s (local testing, trusted intranets), e.g. `["127.0.0.0/8"]`.',
    )

    # --- scale-out ------------------------------------------------------------
    redis_url: str = Field(
        "",
        description="Redis URL. Set (with a PostgreSQL `database_url`) for scale-out: "
        "generations run in `bananastand worker` processes.",
    )
    redis_prefix: str = Field(
        "bananastand", description="Prefix of every Redis key this server writes."
    )
    slot_lease_seconds: float = Field(
        30.0, gt=0, description="Life of a concurrency-slot lease; workers renew live ones."
    )
    worker_concurrency: int = Field(
        4, ge=1, description="Generations one `bananastand worker` process runs at once."
    )
    worker_heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often a worker tells the queue it is alive."
    )
    worker_stall_seconds: float = Field(
        30.0, gt=0, description="A worker silent this long is dead: its jobs are retried."
    )
    janitor_interval_seconds: float = Field(
        5.0, gt=0, description="How often workers renew leases and recover lost generations."
    )
    generation_max_attempts: int = Field(
        2, ge=1, description="Runs of one generation (a worker died) before it is failed."
    )
    generation_max_age_seconds: float = Field(
        3600.0, gt=0, description="A generation still unfinished this long is failed and refunded."
    )
    worker_metrics_port: int = Field(
        0, ge=0, description="Port where a worker serves Prometheus metrics (0: off)."
    )

    # --- built-in renderer --------------------------------------------------
    builtin_latency_seconds: float = Field(
        0.0, description="Artificial time each built-in generation takes (spread over steps)."
    )
    builtin_failure_rate: float = Field(
        0.0, description="Probability (0..1) that one built-in image fails."
    )
    builtin_steps: int = Field(4, description="Progress steps the built-in renderer reports.")
    builtin_safety_words: list[str] = Field(
        default_factory=list,
        description="Words that make the built-in renderer answer like a provider's safety "
        "filter (the contract's `warning`); for testing clients.",
    )

    # --- Gemini backend -----------------------------------------------------------
    gemini_api_key: SecretStr = Field(
        SecretStr(""), description="Gemini API key; enables the Gemini models of the catalogue."
    )
    gemini_base_url: str = Field(
        "", description="Gemini API endpoint. Empty: Google's (set it for a proxy or gateway)."
    )
    gemini_concurrency: int = Field(
        4, ge=1, description="Calls in flight to Gemini at once, across all requests."
    )

    # --- OpenAI backend -----------------------------------------------------------
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="OpenAI API key; enables the OpenAI image models."
    )
    openai_base_url: str = Field(
        "", description="OpenAI API endpoint, e.g. `https://api.openai.com/v1`. Empty: OpenAI's."
    )
    openai_concurrency: int = Field(
        4, ge=1, description="Calls in flight to OpenAI at once, across all requests."
    )

    # --- both hosted backends ------------------------------------------------------
    upstream_max_attempts: int = Field(
        4, ge=1, description="Tries per upstream call on 429/5xx, within the model's timeout."
    )
    upstream_backoff_seconds: float = Field(
        1.0, ge=0, description="First retry delay; doubles per try, with jitter."
    )

    # --- local diffusion backend ---------------------------------------------------
    diffusers_device: str = Field(
        "auto", description="`auto` (CUDA, then MPS, then CPU), or a torch device like `cuda:1`."
    )
    diffusers_allow_download: bool = Field(
        False,
        description="Let diffusers fetch hub weights at start; off: local folders and the "
        "hub cache only.",
    )
    diffusers_batch_window_ms: float = Field(
        15.0, ge=0, description="How long a request waits for others to share its pipeline call."
    )
    diffusers_max_batch: int = Field(4, ge=1, description="Most images in one pipeline call.")
    diffusers_device_concurrency: int = Field(
        1, ge=1, description="Pipeline calls running at once on one device."
    )

    # --- web console -----------------------------------------------------------------
    console_signup: bool = Field(
        True, description="Let anyone create an account on the console's sign-up page."
    )
    console_first_account_admin: bool = Field(
        True,
        description="While no admin exists, print an admin setup code at start; signing up "
        "with it makes an admin.",
    )
    admin_starting_credits: int = Field(
        100,
        ge=0,
        le=1_000_000_000_000,  # billing's largest single change
        description="Credits granted (in the ledger and the audit log) to the first admin, "
        "made with the admin setup code, who also gets API access at once. 0: none.",
    )
    console_admin_page_size: int = Field(
        50, ge=1, le=1000, description="Rows a page of the admin accounts list and audit log."
    )
    console_session_hours: float = Field(
        168.0, gt=0, description="How long a console sign-in lasts, in hours."
    )
    console_login_max_failures: int = Field(
        5, ge=1, description="Failed sign-ins per email (4x per address) before a pause."
    )
    console_login_window_seconds: float = Field(
        900.0, gt=0, description="The window failed sign-ins are counted in, and the pause."
    )
    console_secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark console cookies `Secure`: `auto` when the request came over HTTPS "
        "(behind a TLS proxy, let it send X-Forwarded-Proto).",
    )

    # --- webhooks (extension) ------------------------------------------------------
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="How long one webhook delivery attempt may take."
    )
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="Wait before the first webhook retry; doubles after each failure."
    )
    webhook_max_backoff_seconds: float = Field(
        3600.0, gt=0, description="Longest wait between two webhook attempts."
    )
    webhook_max_age_seconds: float = Field(
        86400.0,
        gt=0,
        description="A webhook not delivered this long after the generation ended is given up.",
    )
    webhook_poll_seconds: float = Field(
        1.0, gt=0, description="How often each process looks for webhook retries that are due."
    )
    webhook_concurrency: int = Field(
        128, ge=1, le=1000, description="Webhook attempts one process makes at once."
    )
    webhook_concurrency_per_url: int = Field(
        4,
        ge=1,
        le=1000,
        description="Of those, to any one URL at once (a hanging receiver holds no more).",
    )

    # --- selling credits (Stripe) ------------------------------------------------------
    stripe_secret_key: SecretStr = Field(
        SecretStr(""),
        description="Stripe secret key (`sk_live_…`, `sk_test_…` or a restricted `rk_…`); "
        "enables the console's Recharge page. Empty: the console sells nothing.",
    )
    stripe_webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="Signing secret (`whsec_…`) of the webhook endpoint registered at Stripe "
        "for `/webhooks/stripe`; only events signed with it move credits.",
    )
    stripe_currency: str = Field(
        "",
        pattern="^([A-Za-z]{3})?$",
        description="Currency the packages are priced in. Empty: `currency`. Only recharges "
        "in `currency` count toward the API-access threshold.",
    )
    stripe_packages: list[CreditPackage] = Field(
        default_factory=lambda: [
            CreditPackage(price=Decimal(10), credits=100),
            CreditPackage(price=Decimal(100), credits=1_100),
            CreditPackage(price=Decimal(1000), credits=12_000),
        ],
        description="Packages on sale, money to credits: JSON such as "
        '`[{"price": "10", "credits": 100}, {"price": "100", "credits": 1100}]`.',
    )
    stripe_payment_method_types: list[str] = Field(
        default_factory=list,
        description='Payment methods Checkout offers, e.g. `["card", "alipay", "wechat_pay"]`. '
        "Empty: those turned on in the Stripe Dashboard.",
    )
    stripe_api_base: str = Field(
        "",
        description="Stripe API endpoint. Empty: `https://api.stripe.com` (set it for a test "
        "double or a proxy).",
    )
    stripe_webhook_tolerance_seconds: int = Field(
        300, ge=1, description="Oldest `Stripe-Signature` timestamp accepted (replays)."
    )

    @field_validator("builtin_failure_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1")
        return value

    @field_validator("reference_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("stripe_packages")
    @classmethod
    def _packages(cls, value: list[CreditPackage]) -> list[CreditPackage]:
        prices = [package.price for package in value]
        if len(set(prices)) != len(prices):
            raise ValueError("two packages have the same price")
        return sorted(value, key=lambda package: package.price)

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if value not in {"dev", "production"}:
            raise ValueError("must be 'dev' or 'production'")
        return value

    # --- derived ----------------------------------------------------------
    @cached_property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        # A wildcard bind address is not reachable as written; remote clients need
        # BANANASTAND_PUBLIC_BASE_URL (the server warns at start).
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'bananastand.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def payments_enabled(self) -> bool:
        """Self-serve recharge: a Stripe key, a webhook secret and something to sell."""
        return bool(
            self.stripe_secret_key.get_secret_value()
            and self.stripe_webhook_secret.get_secret_value()
            and self.stripe_packages
        )

    @property
    def payment_currency(self) -> str:
        return (self.stripe_currency or self.currency).upper()

    @property
    def scale_out(self) -> bool:
        """PostgreSQL + Redis + worker processes, instead of the embedded default."""
        return bool(self.redis_url)

    def check_production(self) -> None:
        """Refuse unsafe defaults outside dev."""
        if self.environment != "production":
            return
        problems = []
        if len(self.signing_secret) < 32:
            problems.append("BANANASTAND_SIGNING_SECRET must be set (32+ characters)")
        if not self.public_base_url.startswith("https://"):
            problems.append("BANANASTAND_PUBLIC_BASE_URL must be an https:// URL")
        if self.demo_account:
            problems.append("BANANASTAND_DEMO_ACCOUNT must be false")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))

    def check_mode(self) -> None:
        """Scale-out needs a database every process shares; processes that share a
        bucket (and so no data folder) need one signing secret."""
        if self.scale_out and self.is_sqlite:
            raise ValueError(
                "BANANASTAND_REDIS_URL is set (scale-out) but the database is SQLite: set "
                "BANANASTAND_DATABASE_URL to a PostgreSQL URL (postgresql+psycopg://…)"
            )
        if self.storage_url and self.scale_out and not self.signing_secret:
            raise ValueError(
                "BANANASTAND_STORAGE_URL is set for scale-out: set BANANASTAND_SIGNING_SECRET "
                "to the same secret on every process (each would make its own otherwise)"
            )
