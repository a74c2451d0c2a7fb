"""Gateway session ids: the server's URL and session id, signed for one run.

A gateway session id is `gs1.<payload>.<mac>` where `payload` is base64url("<server URL>\\n<server
session id>") and `mac` is the first 16 bytes of HMAC-SHA256(gateway secret, "gs1|<run id>|<payload>"),
base64url. The gateway therefore keeps no table it needs for routing: any gateway process holding
the same secret (a restarted one, or a second replica) routes the id to its server, and a run
cannot use, or even probe for, another run's session, because the MAC binds the run id. The
payload is readable (not encrypted): the run learns which server holds its session, which is no
secret to the run that owns it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

VERSION = "gs1"
_MAC_BYTES = 16
MAX_ID_CHARS = 1024  # longer ids are refused before any decoding


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SessionRef:
    """Where a gateway session lives: the server's base URL and the server's own session id."""

    server_url: str
    server_sid: str


class SessionIdCodec:
    """Encodes and verifies gateway session ids with one gateway secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the gateway secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, run_id: str, payload: str) -> bytes:
        msg = f"{VERSION}|{run_id}|{payload}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, run_id: str, server_url: str, server_sid: str) -> str:
        """The id the run sees for its session `server_sid` on `server_url`."""
        if "\n" in server_url or "\n" in server_sid:
            raise ValueError("server URL and session id must not contain newlines")
        payload = _b64e(f"{server_url}\n{server_sid}".encode())
        return f"{VERSION}.{payload}.{_b64e(self._mac(run_id, payload))}"

    def decode(self, run_id: str, session_id: str) -> SessionRef | None:
        """The session's server and server id, or None when the id is malformed, forged or
        belongs to another run (the caller answers 404 for all three alike)."""
        if len(session_id) > MAX_ID_CHARS:
            return None
        parts = session_id.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            return None
        _, payload, mac_text = parts
        try:
            mac = _b64d(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(run_id, payload)):
            return None
        try:
            server_url, server_sid = _b64d(payload).decode().split("\n", 1)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        return SessionRef(server_url, server_sid)
