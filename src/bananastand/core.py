"""The services every role needs, and nothing heavy: the database, accounts,
billing, console sign-in and audited admin actions.

`container.Services` adds generation (backends, storage, the job runner) on top;
the admin commands use only this, so they start in a fraction of a second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from bananastand.accounts import Accounts
from bananastand.admin import Administration
from bananastand.billing import Billing
from bananastand.config import Settings
from bananastand.console_auth import ConsoleAuth
from bananastand.db import Database
from bananastand.storage import load_or_create_secret


@dataclass
class Core:
    settings: Settings
    db: Database
    accounts: Accounts
    billing: Billing
    admin: Administration
    console_auth: ConsoleAuth
    secret: bytes  # signs image URLs; derives the admin setup code

    @classmethod
    def build(cls, settings: Settings) -> Core:
        db = Database(settings.resolved_database_url)
        secret = load_or_create_secret(settings.signing_secret, settings.data_dir)
        accounts = Accounts(db, max_keys=settings.max_keys_per_account)
        billing = Billing(db, threshold=settings.api_access_threshold, currency=settings.currency)
        return cls(
            settings=settings,
            db=db,
            accounts=accounts,
            billing=billing,
            admin=Administration(db, accounts, billing),
            console_auth=ConsoleAuth(
                db,
                accounts,
                session_seconds=settings.console_session_hours * 3600,
                max_failures=settings.console_login_max_failures,
                window_seconds=settings.console_login_window_seconds,
                signup_open=settings.console_signup,
                setup_code=admin_setup_code(secret)
                if settings.console_first_account_admin
                else None,
                starting_credits=settings.admin_starting_credits,
            ),
            secret=secret,
        )


def admin_setup_code(secret: bytes) -> str:
    """The code that makes the first admin: stable for a server (every process of a
    scale-out deployment shares the secret), unguessable without its secret."""
    digest = hmac.new(secret, b"bananastand console admin setup", hashlib.sha256).digest()
    text = base64.b32encode(digest).decode()[:16]
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))
