"""Bearer-token authentication of runs, and the secrets the gateway itself holds.

Tokens file (one format, JSON): an object mapping run id to that run's token,
    {"grpo-math-7": "4f1c...long random...", "ppo-code-2": "9ab0..."}
Run ids are 1-128 chars of [A-Za-z0-9._-] (they appear as metric labels); tokens are at least
16 chars and distinct across runs. A presented token is hashed and compared against every run's
hash with `hmac.compare_digest`, without stopping at a match, so the time taken does not depend
on which run, or how much of a token, matched. Tokens are never logged and never appear in error
messages; log lines name the run id only.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MIN_TOKEN_CHARS = 16
INSECURE_RUN_ID = "anonymous"  # the run every request belongs to under --insecure-no-auth


class AuthConfigError(ValueError):
    """The tokens file, server token or secret is missing or malformed (refuse to start)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def parse_tokens(text: str, source: str = "tokens file") -> dict[str, str]:
    """Run id -> token from the JSON text of a tokens file, validated."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AuthConfigError(f"{source}: not JSON ({e.msg} at line {e.lineno}); expected "
                              '{"<run_id>": "<token>", ...}') from None
    if not isinstance(data, dict):
        raise AuthConfigError(f'{source}: expected a JSON object {{"<run_id>": "<token>", ...}}')
    seen: dict[bytes, str] = {}
    for run_id, token in data.items():
        if not RUN_ID.match(run_id):
            raise AuthConfigError(f"{source}: run id {run_id[:64]!r} must be 1-128 chars of [A-Za-z0-9._-]")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise AuthConfigError(f"{source}: the token of run {run_id!r} must be a string of at least "
                                  f"{MIN_TOKEN_CHARS} characters")
        d = _digest(token)
        if d in seen:
            raise AuthConfigError(f"{source}: runs {seen[d]!r} and {run_id!r} have the same token")
        seen[d] = run_id
    return dict(data)


class RunTokens:
    """Maps a presented bearer token to its run id in constant time."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._entries = [(_digest(tok), run_id) for run_id, tok in tokens.items()]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "RunTokens":
        """Reads and validates a tokens file (see the module docstring for its format)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise AuthConfigError(f"cannot read tokens file {p}: {e.strerror}") from None
        return cls(parse_tokens(text, f"tokens file {p}"))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def run_ids(self) -> list[str]:
        return [run_id for _, run_id in self._entries]

    def run_for(self, authorization: str | None) -> str | None:
        """The run id whose token is in an `Authorization: Bearer <token>` header, else None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = _digest(token.strip())
        found = None
        for digest, run_id in self._entries:  # no early exit
            if hmac.compare_digest(presented, digest):
                found = run_id
        return found


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    """A secret from a file (surrounding whitespace stripped), refusing an empty one."""
    p = Path(path)
    try:
        value = p.read_text().strip()
    except OSError as e:
        raise AuthConfigError(f"cannot read {what} file {p}: {e.strerror}") from None
    if not value:
        raise AuthConfigError(f"{what} file {p} is empty")
    return value


def server_token(path: str | None, env_var: str = "PARKRL_SANDBOX_TOKEN") -> str | None:
    """The token the gateway presents to the sandbox servers: the file, else $PARKRL_SANDBOX_TOKEN."""
    if path:
        return read_secret_file(path, "server token")
    return os.environ.get(env_var) or None


def gateway_secret(path: str | None, env_var: str = "PARKRL_GATEWAY_SECRET") -> tuple[bytes, bool]:
    """(secret, persistent): the HMAC key for session ids from the file or $PARKRL_GATEWAY_SECRET;
    a random one (persistent=False) when neither is set, so sessions do not outlive the process."""
    value = read_secret_file(path, "gateway secret") if path else os.environ.get(env_var, "")
    if value:
        if len(value) < 16:
            raise AuthConfigError("the gateway secret must be at least 16 characters")
        return value.encode(), True
    return secrets.token_bytes(32), False
