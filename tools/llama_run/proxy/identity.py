"""Who sent a request: a client listed in --clients by its API key, else `X-Client-Name`, else a short
sha256 fingerprint of the API key (never the key), else the client's address. The name of a client listed
with a key is its key's alone; past MAX_CLIENTS unlisted names, new ones count together as "other". Also
the --clients file itself (TOML or JSON): names and per-client limits."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Set, Tuple

from tools.llama_bench.utils import UserError, check_readable_file, require

from .records import IdentitySource

NAME_HEADER = "X-Client-Name"
MAX_NAME = 64
MAX_CLIENTS = 1000  # unlisted client names kept apart; later ones are counted together as OTHER
OTHER = "other"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@/+-]+")
LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")


@dataclass
class ClientLimits:
    requests_per_minute: Optional[int] = None
    tokens_per_minute: Optional[int] = None  # prompt + generated tokens of finished requests
    tokens_per_day: Optional[int] = None  # over the last 24 hours, history included

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute, self.tokens_per_day))


@dataclass
class ClientsTable:
    by_key_hash: Dict[str, str] = field(default_factory=dict)  # full sha256 hex of a key -> client name
    limits: Dict[str, ClientLimits] = field(default_factory=dict)  # client name -> its limits
    default: ClientLimits = field(default_factory=ClientLimits)  # everyone not listed
    keyed: Set[str] = field(default_factory=set)  # names that only their key may use

    def limits_for(self, name: str) -> ClientLimits:
        return self.limits.get(name, self.default)


class ClaimedName(Exception):
    """X-Client-Name names a client listed with a key, without that key: nobody may spend its quota."""

    def __init__(self, name: str) -> None:
        super().__init__(f"client '{name}' is listed with a key: send its key (Authorization: Bearer ...)")
        self.name = name


@dataclass
class Identity:
    name: str
    source: IdentitySource
    limits: ClientLimits


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def fingerprint(key: str) -> str:
    """What an unlisted key is known as: 12 hex digits of its sha256 (48 bits; not reversible)."""
    return "key-" + key_hash(key)[:12]


def clean_name(text: str) -> Optional[str]:
    """A self-declared client name, safe for labels, tables and `[req]` lines (no spaces, at most 64 characters)."""
    name = _UNSAFE.sub("_", text.strip())[:MAX_NAME].strip("_")
    return name or None


def request_key(headers: Mapping[str, str]) -> Optional[str]:
    """The API key a client sent: `Authorization: Bearer KEY`, else `X-Api-Key`."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        key = auth[7:].strip()
        if key:
            return key
    return headers.get("X-Api-Key", "").strip() or None


class NameBook:
    """The names of unlisted clients seen so far, at most `limit`: anyone can make up a name (or a key),
    and each name is a metrics series, a rate-limit window and a row in /proxy/requests."""

    def __init__(self, limit: int = MAX_CLIENTS) -> None:
        self.limit = limit
        self.names: Set[str] = set()

    def admit(self, name: str, listed: bool) -> str:
        if listed or name in self.names:
            return name
        if len(self.names) >= self.limit:
            return OTHER
        self.names.add(name)
        return name


def identify(
    headers: Mapping[str, str], peer: Optional[str], table: ClientsTable, book: Optional[NameBook] = None
) -> Identity:
    book = book if book is not None else NameBook()
    key = request_key(headers)
    if key is not None:
        listed = table.by_key_hash.get(key_hash(key))
        if listed is not None:  # a listed key wins over X-Client-Name, so that limits cannot be dodged
            return Identity(listed, IdentitySource.CLIENTS_FILE, table.limits_for(listed))
    name = clean_name(headers.get(NAME_HEADER, ""))
    if name is not None:
        if name in table.keyed:
            raise ClaimedName(name)
        name = book.admit(name, listed=name in table.limits)
        return Identity(name, IdentitySource.HEADER, table.limits_for(name))
    if key is not None:
        return Identity(book.admit(fingerprint(key), False), IdentitySource.KEY, table.default)
    name = clean_name(peer or "") or "unknown"
    return Identity(book.admit(name, False), IdentitySource.ADDRESS, table.default)


# -- the --clients file ---------------------------------------------------------------------------


def _limits(where: str, values: Mapping[str, Any], allowed: Tuple[str, ...]) -> ClientLimits:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown setting '{unknown[0]}' (known: {', '.join(allowed)})")
    out = ClientLimits()
    for key in LIMIT_KEYS:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: {key} must be a whole number >= 1, got {value!r}")
        setattr(out, key, value)
    return out


def parse_clients(data: Any, origin: str) -> ClientsTable:
    """{"default": {limits}, "clients": {NAME: {"key" | "keys" | "key_sha256": ..., limits}}}."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: expected a table with 'clients' (and optionally 'default')")
    unknown = sorted(set(data) - {"clients", "default"})
    if unknown:
        raise UserError(f"{origin}: unknown section '{unknown[0]}' (known: clients, default)")
    table = ClientsTable()
    default = data.get("default", {})
    if not isinstance(default, dict):
        raise UserError(f"{origin}: 'default' must be a table of limits")
    table.default = _limits(f"{origin}: default", default, LIMIT_KEYS)
    clients = data.get("clients", {})
    if not isinstance(clients, dict):
        raise UserError(f"{origin}: 'clients' must be a table of named clients")
    for raw_name, entry in clients.items():
        name = clean_name(str(raw_name)) or ""
        where = f"{origin}: client '{raw_name}'"
        if not name or name != raw_name:
            raise UserError(f"{where}: names may only use letters, digits and . _ : @ / + - (at most {MAX_NAME})")
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a table")
        table.limits[name] = _limits(where, entry, LIMIT_KEYS + ("key", "keys", "key_sha256"))
        keys = entry.get("keys", [])
        if "key" in entry:
            keys = [entry["key"], *keys]
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise UserError(f"{where}: 'key'/'keys' must be non-empty strings")
        hashes = [key_hash(k) for k in keys]
        digest = entry.get("key_sha256")
        if digest is not None:
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise UserError(f"{where}: key_sha256 must be 64 hex digits (sha256 of the key)")
            hashes.append(digest.lower())
        for h in hashes:
            other = table.by_key_hash.get(h)
            if other is not None and other != name:
                raise UserError(f"{where}: the same key is also listed for '{other}'")
            table.by_key_hash[h] = name
        if hashes:
            table.keyed.add(name)
    return table


def check_clients(path: Path) -> None:
    """A --clients file read once before anything starts, so that its mistakes are one line up front."""
    if not path.is_file():
        raise UserError(f"--clients {path}: no such file")
    load_clients(path)


def load_clients(path: Path) -> ClientsTable:
    check_readable_file(path, "--clients")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--clients {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"--clients {path}: not valid JSON ({exc})") from None
    else:
        toml: Any = (
            require("tomllib") if sys.version_info >= (3, 11) else require("tomli", purpose="--clients TOML files")
        )
        try:
            data = toml.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            raise UserError(f"--clients {path}: not valid TOML ({exc})") from None
    return parse_clients(data, f"--clients {path}")
