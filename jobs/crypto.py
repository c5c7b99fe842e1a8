"""Secrets at rest: webhook signing secrets are stored encrypted (AES-256-GCM)."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jobs.settings import Settings


class SecretBox:
    """Encrypt and decrypt short secrets with the service's `SECRETS_KEY`."""

    def __init__(self, settings: Settings) -> None:
        self._aead = AESGCM(base64.b64decode(settings.secrets_key.get_secret_value()))

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt, bound to `context` (e.g. the endpoint id) so it cannot be moved."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open(self, token: str, context: str) -> str:
        raw = base64.b64decode(token)
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
