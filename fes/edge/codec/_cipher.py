"""The cipher: AES-GCM with a keyring, and its keys read from the environment."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fes.errors import CipherError, ConfigurationError

from ._frame import _NONCE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Cipher"]

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def _aesgcm() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise CipherError(
            "encryption needs the 'cryptography' package: pip install 'fes-events[crypto]'"
        ) from exc
    return AESGCM


class Cipher:
    """AES-GCM with a keyring: encrypt under the current key, decrypt under any.

    ``keys`` maps key ids to 16, 24 or 32-byte keys; ``current`` names the one
    new payloads are encrypted with.  Keep retired keys in the ring to read
    what was written under them.  Nonces are 12 random bytes, so one key
    should encrypt well under 2**32 payloads: rotate long before that.
    """

    __slots__ = ("_current", "_current_id", "_keys")

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        aesgcm = _aesgcm()
        if not keys:
            raise ConfigurationError("a cipher needs at least one key")
        table: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
                raise ConfigurationError(
                    f"key id {key_id!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
                )
            if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
                size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
                raise ConfigurationError(f"key {key_id!r} must be 16, 24 or 32 bytes, got {size}")
            table[key_id] = aesgcm(bytes(key))
        if current not in table:
            raise ConfigurationError(
                f"the current key id {current!r} is not in the keyring "
                f"(key ids: {', '.join(sorted(table))})"
            )
        self._keys = table
        self._current = current
        self._current_id = current.encode("ascii")

    def __repr__(self) -> str:
        return f"Cipher(current={self._current!r}, key_ids={sorted(self._keys)!r})"

    @property
    def current(self) -> str:
        """The id of the key new payloads are encrypted with."""
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key this cipher can decrypt with."""
        return frozenset(self._keys)

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key."""
        return os.urandom(32)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Cipher | None:
        """The cipher configured by ``FES_CIPHER_KEYS`` and ``FES_CIPHER_KEY_ID``.

        None when ``FES_CIPHER_KEYS`` is unset or empty, or says ``none``:
        ``SCHOOL_FES_CIPHER_KEYS=none`` reads the ``school`` application
        without a cipher where ``FES_CIPHER_KEYS`` gives the others one (a
        plain leader served by another service, for instance).  ``env``
        defaults to ``os.environ``; see the module documentation for the
        format.
        """
        env = os.environ if env is None else env
        spec = env.get("FES_CIPHER_KEYS", "").strip()
        current = env.get("FES_CIPHER_KEY_ID", "").strip()
        if spec.lower() == "none":
            if current:
                raise ConfigurationError(
                    "FES_CIPHER_KEYS says none but FES_CIPHER_KEY_ID names a key"
                )
            return None
        if not spec:
            if current:
                raise ConfigurationError("FES_CIPHER_KEY_ID is set but FES_CIPHER_KEYS is empty")
            return None
        keys: dict[str, bytes] = {}
        for number, item in enumerate(spec.split(","), 1):
            item = item.strip()
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            key_id = key_id.strip()
            if not sep:
                raise ConfigurationError(
                    f"FES_CIPHER_KEYS entry {number} is not of the form id:base64key"
                )
            if key_id in keys:
                raise ConfigurationError(f"FES_CIPHER_KEYS names key id {key_id!r} twice")
            try:
                text = encoded.strip().translate(str.maketrans("-_", "+/"))
                keys[key_id] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigurationError(
                    f"the key {key_id!r} in FES_CIPHER_KEYS is not valid base64"
                ) from None
        if not current:
            if len(keys) != 1:
                raise ConfigurationError(
                    "FES_CIPHER_KEYS holds several keys: set FES_CIPHER_KEY_ID to the "
                    "one to encrypt with"
                )
            current = next(iter(keys))
        return cls(keys, current)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Nonce and ciphertext of ``plaintext`` under the current key."""
        nonce = os.urandom(_NONCE)
        return nonce + self._keys[self._current].encrypt(nonce, plaintext, associated_data)

    def decrypt(self, key_id: str, sealed: bytes, associated_data: bytes) -> bytes:
        """The plaintext of what :meth:`encrypt` returned under key ``key_id``."""
        aead = self._keys.get(key_id)
        if aead is None:
            raise CipherError(
                f"it was encrypted under key id {key_id!r}, which is not in the keyring "
                f"(key ids: {', '.join(sorted(self._keys))}); FES_CIPHER_KEYS (or the "
                "application's <APP>_FES_CIPHER_KEYS) must hold every key that sealed what "
                "it reads: the retired ones, and a newer one its leader rotated to"
            )
        if len(sealed) < _NONCE + 16:
            raise CipherError("the ciphertext is truncated")
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], associated_data)
        except Exception:  # cryptography's InvalidTag: say what it means
            raise CipherError(
                f"authentication failed under key id {key_id!r}: the keyring's key for "
                f"{key_id!r} is not the one that sealed it (check FES_CIPHER_KEYS, or the "
                "application's <APP>_FES_CIPHER_KEYS), or it was altered or copied from "
                "another row or application"
            ) from None

