"""Keys derived from `SECRETS_KEY`, one per purpose, and secrets at rest.

`SECRETS_KEY` is a master key that nothing uses directly: HKDF-SHA256 derives one key
per purpose (`derive_key`), so what is done with one says nothing about another.

    sessions          dashboard session references and CSRF tokens (`api/sessions.py`)
    secrets-at-rest   webhook signing secrets, sealed with AES-256-GCM (`SecretBox`)

Rotation: `SECRETS_KEY_PREVIOUS` lists former `SECRETS_KEY`s. A sealed secret opens under
the current key or any previous one, and is always sealed under the current one; sessions
use the current key alone. So rotating `SECRETS_KEY` (the old one moved to
`SECRETS_KEY_PREVIOUS`) ends every dashboard session and loses no webhook secret.

A sealed value is `v2.<base64(nonce, ciphertext)>` under the derived key. One without the
prefix was sealed before keys were derived, under `SECRETS_KEY` itself; it still opens.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jobs.errors import ServiceError
from jobs.settings import Settings

SESSIONS = "sessions"
SECRETS_AT_REST = "secrets-at-rest"
_SEALED_PREFIX = "v2."


def derive_key(master: bytes, purpose: str) -> bytes:
    """The 32-byte key for `purpose`, derived from a master key with HKDF-SHA256."""
    info = f"longrun/{purpose}".encode()
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(master)


def purpose_key(settings: Settings, purpose: str) -> bytes:
    """The current key for `purpose` (derived from `SECRETS_KEY`)."""
    return derive_key(settings.master_keys[0], purpose)


class SecretUnreadable(ServiceError):
    """A sealed secret opens under no configured key: `SECRETS_KEY` changed without the old
    one in `SECRETS_KEY_PREVIOUS`."""

    type = "secret_unreadable"


class SecretBox:
    """Seal and open short secrets under keys derived from `SECRETS_KEY` (and, to open,
    from each of `SECRETS_KEY_PREVIOUS`)."""

    def __init__(self, settings: Settings) -> None:
        masters = settings.master_keys
        self._current = AESGCM(derive_key(masters[0], SECRETS_AT_REST))
        self._openers = [AESGCM(derive_key(m, SECRETS_AT_REST)) for m in masters]
        self._legacy = [AESGCM(m) for m in masters]

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt under the current key, bound to `context` (e.g. the endpoint id) so the
        sealed value cannot be moved to another record."""
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, plaintext.encode(), context.encode())
        return _SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, token: str, context: str) -> str:
        """Decrypt with whichever configured key sealed it; `SecretUnreadable` if none did."""
        if token.startswith(_SEALED_PREFIX):
            raw, keys = base64.b64decode(token.removeprefix(_SEALED_PREFIX)), self._openers
        else:
            raw, keys = base64.b64decode(token), self._legacy
        for aead in keys:
            try:
                return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
            except InvalidTag:
                continue
        raise SecretUnreadable(
            "a stored webhook secret opens under no configured key: put the SECRETS_KEY it "
            "was sealed under in SECRETS_KEY_PREVIOUS"
        )
