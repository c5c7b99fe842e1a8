"""The dashboard cookie the security review forged, for the tests that it must now fail."""

from __future__ import annotations

import base64
import hashlib
import hmac

from jobs.settings import DEV_SECRETS_KEY


def review_cookie(secrets_key: str = DEV_SECRETS_KEY, expires: int = 9_999_999_999) -> str:
    """`admin.<expiry>.<HMAC>` as the old dashboard signed it, computed by anyone who read
    the source (which holds the built-in SECRETS_KEY), with no operator key at all."""
    master = base64.b64decode(secrets_key)
    key = hmac.new(master, b"longrun-dashboard-session", hashlib.sha256).digest()
    payload = f"admin.{expires}"
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
