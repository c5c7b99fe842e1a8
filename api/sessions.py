"""Operator dashboard sessions: a signed, expiring, HTTP-only cookie, and CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from jobs.settings import Settings

COOKIE = "lr_session"
SESSION_SECONDS = 8 * 3600


def _key(settings: Settings, purpose: str) -> bytes:
    secret = base64.b64decode(settings.secrets_key.get_secret_value())
    return hmac.new(secret, f"longrun-dashboard-{purpose}".encode(), hashlib.sha256).digest()


def _mac(settings: Settings, purpose: str, message: str) -> str:
    digest = hmac.new(_key(settings, purpose), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_session(settings: Settings, now: float | None = None) -> str:
    """A session token for an operator: `admin.<expiry>.<signature>`."""
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    payload = f"admin.{expires}"
    return f"{payload}.{_mac(settings, 'session', payload)}"


def session_valid(settings: Settings, token: str | None, now: float | None = None) -> bool:
    """Whether the token was signed by this service and has not expired."""
    if not token or token.count(".") != 2 or len(token) > 200:
        return False
    role, expires, signature = token.split(".")
    expected = _mac(settings, "session", f"{role}.{expires}")
    if not hmac.compare_digest(signature, expected) or role != "admin":
        return False
    return expires.isdigit() and int(expires) > (time.time() if now is None else now)


def csrf_token(settings: Settings, session: str) -> str:
    """The form token that goes with a session."""
    return _mac(settings, "csrf", session)


def csrf_valid(settings: Settings, session: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(settings, session), token or "")
