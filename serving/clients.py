"""Pseudonymous client keys: who voted, without storing who they are.

The feedback loop counts one vote per distinct client per image, so a prediction records *which*
client asked for it. Storing the IP address would make the store personal data; a keyed hash
(HMAC-SHA256 with a secret salt) tells clients apart while the address stays unrecoverable
without the salt: a plain hash of an IPv4 address is reversed by trying all 2^32 of them.

The salt is ``DEEPFAKENET_CLIENT_KEY_SALT`` or, when unset, a random one created once in
``<home>/client_key.salt`` (mode 0600), so that keys stay stable across restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("deepfakenet.service")

#: Hex characters of a client key (128 bits of the HMAC: collisions are no concern).
CLIENT_KEY_CHARS = 32
#: Bytes of a generated salt.
SALT_BYTES = 32


def load_or_create_salt(path: Path) -> bytes:
    """The salt kept in ``path``; create it (random, mode 0600) when the file does not exist.

    Creation is atomic (written to a private temporary file, then hard-linked into place), so
    workers starting at once agree on one salt and nobody ever reads a half-written file.

    Raises:
        ValueError: The file exists but holds no salt (it was truncated by hand).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(SALT_BYTES) + "\n")
            try:
                os.link(tmp, path)
                log.info("created a new client-key salt in %s", path)
            except FileExistsError:
                pass  # another worker won the race: use its salt
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    salt = path.read_text(encoding="ascii").strip()
    if not salt:
        raise ValueError(f"{path} holds no salt: delete it to create a new one")
    return salt.encode("ascii")


class ClientKeyer:
    """Turns a client's address into its stable pseudonymous key.

    Args:
        salt: The secret HMAC key. Whoever holds it can test guesses of an address, so it is
            kept out of the store and out of logs.
    """

    def __init__(self, salt: bytes) -> None:
        if not salt:
            raise ValueError("the client-key salt must not be empty")
        self._salt = salt

    def __repr__(self) -> str:
        return "ClientKeyer(salt=***)"

    def key(self, host: str | None) -> str | None:
        """The client's key: the first 32 hex digits of HMAC-SHA256(salt, host); None if unknown."""
        if not host:
            return None
        digest = hmac.new(self._salt, host.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return digest.hexdigest()[:CLIENT_KEY_CHARS]


class AccessLogPseudonymiser(logging.Filter):
    """Writes the client's key instead of its address into BentoML's access log.

    BentoML 1.4.40's access log (logger ``bentoml.access``) starts every line with the peer's
    ``host:port``; with this filter the line starts with ``client=<key>``, so logs can still
    follow one client without holding its address.

    Args:
        keyer: Makes the key of an address.
    """

    def __init__(self, keyer: ClientKeyer) -> None:
        super().__init__()
        self._keyer = keyer

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the address argument of an access line; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], str):
            host = args[0].rsplit(":", 1)[0] if args[0] != "_" else None
            record.args = (f"client={self._keyer.key(host) or '_'}", *args[1:])
        return True
