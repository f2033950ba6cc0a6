"""Who may do what: bearer tokens scoped to collections with roles (read, write, admin), read from a
file and re-read on SIGHUP; the single ``--auth-token`` means admin on every collection."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from crossbit.server.core.collections import NAME, NAME_RULE
from crossbit.server.core.exceptions import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

ROLES = ("read", "write", "admin")  # each role can do what the ones before it can
ANY = "*"  # a role on every collection, present and future
# what each call needs on the collection it names
NEEDS = {"search": "read", "encode": "read", "get": "read", "scroll": "read", "count": "read",
         "stats": "read", "describe": "read", "add": "write", "delete": "write",
         "update": "write", "create": "admin", "drop": "admin"}


@dataclass(frozen=True)
class Principal:
    """Whoever presented a token: a name (for logs) and a role per collection (``*``: any)."""

    name: str
    roles: dict[str, str] = field(default_factory=dict)

    def role_on(self, collection: str) -> str | None:
        role = self.roles.get(collection)
        wildcard = self.roles.get(ANY)
        if role is None or (wildcard and ROLES.index(wildcard) > ROLES.index(role)):
            role = wildcard
        return role

    def may(self, collection: str, action: str) -> bool:
        role = self.role_on(collection)
        return role is not None and ROLES.index(role) >= ROLES.index(NEEDS[action])

    def require(self, collection: str, action: str) -> None:
        """PermissionDenied unless this principal may do ``action`` on ``collection``."""
        if not self.may(collection, action):
            role = self.role_on(collection)
            raise PermissionDenied(
                f"token {self.name!r} may not {action} on collection {collection!r} (it needs "
                f"the {NEEDS[action]} role there; this token has "
                f"{'the ' + role + ' role' if role else 'no role'} on it)")

    def sees(self, collection: str) -> bool:
        """Whether ListCollections shows the collection to this principal."""
        return self.role_on(collection) is not None


OPEN = Principal("anyone", {ANY: "admin"})  # a server without tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The tokens a server accepts. Tokens are kept only as SHA-256 digests in memory, and a
    presented token is found by its digest (a constant-time compare of digests)."""

    def __init__(self, admin_token: str | None = None, path: str | None = None):
        self.admin_token, self.path = admin_token, path
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Principal] = {}
        self.load()

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def load(self) -> None:
        """Read the token file (and the admin token) again; a bad file raises ValueError and the
        tokens in force stay as they were."""
        table: dict[bytes, Principal] = {}
        if self.admin_token:
            table[_digest(self.admin_token)] = Principal("auth-token", {ANY: "admin"})
        if self.path:
            for principal, digest in read_token_file(self.path):
                if digest in table:
                    raise ValueError(f"{self.path}: token of {principal.name!r} is given twice")
                table[digest] = principal
        with self._lock:
            self._by_digest = table

    def reload(self) -> str:
        """:meth:`load`, for SIGHUP: returns a line for the log (the error, when the file is bad)."""
        try:
            self.load()
        except (OSError, ValueError) as exc:
            return f"tokens not reloaded, the previous ones stay: {exc}"
        return f"tokens reloaded: {len(self._by_digest)} tokens"

    def authenticate(self, headers: list[str]) -> Principal:
        """The principal of the ``authorization`` header values of one request.

        Raises:
            Unauthenticated: no header, more than one, not ``Bearer <token>``, or unknown.
        """
        if not self.enabled:
            return OPEN
        if len(headers) != 1:
            raise Unauthenticated("missing or repeated bearer token (send exactly one "
                                  "'authorization: Bearer <token>')")
        header = headers[0]
        if not header.startswith("Bearer "):
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        digest = _digest(header[len("Bearer "):])
        with self._lock:
            table = self._by_digest
        for known, principal in table.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown bearer token")


def read_token_file(path: str) -> list[tuple[Principal, bytes]]:
    """Tokens from a TOML or JSON file::

        [[token]]
        name = "shop-app"              # for the logs
        token = "..."                  # or sha256 = "<hex of the token's SHA-256>"
        collections = { shop = "write", photos = "read" }   # "*" = every collection

    Raises:
        ValueError: naming the entry and what is wrong with it.
    """
    text = Path(path).read_text()
    data = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
    entries = data.get("token") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a list 'token' of entries ([[token]] in TOML)")
    out = []
    for n, entry in enumerate(entries):
        where = f"{path}: token entry {n + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a table")
        unknown = set(entry) - {"name", "token", "sha256", "collections"}
        if unknown:
            raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
        name = str(entry.get("name") or f"token-{n + 1}")
        if ("token" in entry) == ("sha256" in entry):
            raise ValueError(f"{where} ({name}): give exactly one of token or sha256")
        if "token" in entry:
            token = entry["token"]
            if not isinstance(token, str) or len(token) < 8:
                raise ValueError(f"{where} ({name}): a token must be a string of 8 characters "
                                 "or more")
            digest = _digest(token)
        else:
            try:
                digest = bytes.fromhex(entry["sha256"])
            except (TypeError, ValueError):
                digest = b""
            if len(digest) != 32:
                raise ValueError(f"{where} ({name}): sha256 must be 64 hex digits")
        roles = entry.get("collections")
        if not isinstance(roles, dict) or not roles:
            raise ValueError(f"{where} ({name}): 'collections' must map collection names (or "
                             "'*') to a role")
        for collection, role in roles.items():
            if collection != ANY and not NAME.fullmatch(collection):  # a typo would grant nothing
                raise ValueError(f"{where} ({name}): {collection!r} can never be a collection "
                                 f"name ({NAME_RULE}; '*' for every collection)")
            if role not in ROLES:
                raise ValueError(f"{where} ({name}): role {role!r} on {collection!r} is not one of "
                                 f"{', '.join(ROLES)}")
        out.append((Principal(name, dict(roles)), digest))
    return out
