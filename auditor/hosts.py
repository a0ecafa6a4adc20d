"""The hosts file (``--hosts``): TOML ``[[host]]`` tables -> Targets; errors name the line.

```toml
[[host]]
name = "kvm1"                          # the host column everywhere
uri = "qemu+ssh://root@kvm1/system"    # any libvirt URI
labels = { site = "ams", cluster = "a" }
```
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from auditor.errors import ConfigError
from auditor.models import OWN_LABELS, Labels, Target

KEYS = ("name", "uri", "labels")
# Label keys are Prometheus label names, and not one of the labels the metrics set.
LABEL_KEY = re.compile(r"[a-z_][a-z0-9_]*")  # lower case, as Prometheus' own
RESERVED = OWN_LABELS | {"le", "quantile", "job", "instance"}  # and those Prometheus sets
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")
_HEADER = re.compile(r"\s*\[\[\s*\"?host\"?\s*\]\]")
_INLINE = re.compile(r"\s*host\s*=\s*\[")
_TABLE = re.compile(r"\s*\[")  # any table header
_HINT = "see README, Fleet: the hosts file"


class _Lines:
    """Where each ``[[host]]`` table and its keys are in the file's text (for messages)."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.lines = name, text.splitlines()
        self.headers = [i for i, ln in enumerate(self.lines) if _HEADER.match(ln)]
        inline = next((i for i, ln in enumerate(self.lines) if _INLINE.match(ln)), None)
        self.inline = inline  # 'host = [ {...}, ... ]': every host is on or after this line

    def at(self, index: int | None = None, key: str | None = None, sub: str | None = None) -> str:
        """'FILE:LINE' of the ``key`` of host table ``index`` (in its ``sub`` table, e.g.
        labels, when given), else of the table's header; 'FILE' when it cannot be told."""
        if index is None or index >= len(self.headers):
            return self.name if self.inline is None else f"{self.name}:{self.inline + 1}"
        start = self.headers[index]
        end = self.headers[index + 1] if index + 1 < len(self.headers) else len(self.lines)
        found = self._find(start + 1, end, sub, key)
        return f"{self.name}:{(start if found is None else found) + 1}"

    def _find(self, start: int, end: int, sub: str | None, key: str | None) -> int | None:
        """The line of ``key`` (or of ``sub`` itself) between ``start`` and ``end``: in the
        host's own lines (``sub = {...}``, ``sub.key = ...``), or in a ``[host.sub]`` table."""
        own = next((i for i in range(start, end) if _TABLE.match(self.lines[i])), end)
        for name in filter(None, (f"{sub}.{key}" if sub and key else None, sub or key)):
            line = self._key(start, own, name)
            if line is not None:
                return line
        if sub is None:
            return None
        header = re.compile(rf"\s*\[\s*host\s*\.\s*{re.escape(sub)}\s*\]")
        table = next((i for i in range(own, end) if header.match(self.lines[i])), None)
        if table is None or key is None:
            return table
        stop = next((i for i in range(table + 1, end) if _TABLE.match(self.lines[i])), end)
        return self._key(table + 1, stop, key)

    def _key(self, start: int, end: int, name: str) -> int | None:
        keyed = re.compile(rf"\s*[\"']?{re.escape(name)}[\"']?\s*=")
        return next((i for i in range(start, end) if keyed.match(self.lines[i])), None)


def load_hosts(path: str) -> tuple[Target, ...]:
    """The hosts of the file at ``path``, in file order."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the hosts file: {exc.strerror}", _HINT) from exc
    return parse_hosts(text, path)


def parse_hosts(text: str, name: str) -> tuple[Target, ...]:
    """Validate the text of a hosts file named ``name``."""
    lines = _Lines(name, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}", _HINT) from exc
    unknown = sorted(set(doc) - {"host"})
    if unknown:
        raise ConfigError(f"{name}: unknown key {unknown[0]!r}: only [[host]] tables", _HINT)
    entries = doc.get("host", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{name}: 'host' must be [[host]] tables", _HINT)
    if not entries:
        raise ConfigError(f"{name}: no [[host]] table", _HINT)
    targets = tuple(_target(e, i, lines) for i, e in enumerate(entries))
    _unique(targets, lines)
    return targets


def _target(entry: dict[str, Any], index: int, lines: _Lines) -> Target:
    for key in entry:
        if key not in KEYS:
            raise ConfigError(
                f"{lines.at(index, key)}: unknown key {key!r} (known: {', '.join(KEYS)})", _HINT
            )
    for key in ("name", "uri"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            raise ConfigError(
                f"{lines.at(index, key)}: {key} must be a non-empty string without spaces "
                "around it",
                _HINT,
            )
    if not NAME.fullmatch(entry["name"]):
        raise ConfigError(
            f"{lines.at(index, 'name')}: name {entry['name']!r}: letters, digits and . _ - : @ "
            "only",
            _HINT,
        )
    return Target(uri=entry["uri"], name=entry["name"], labels=_labels(entry, index, lines))


def _labels(entry: dict[str, Any], index: int, lines: _Lines) -> Labels:
    labels = entry.get("labels", {})
    at = lines.at(index, "labels")
    if not isinstance(labels, dict):
        raise ConfigError(f'{at}: labels must be a table: labels = {{ site = "ams" }}', _HINT)
    for key, value in labels.items():
        at = lines.at(index, key, sub="labels")
        if not LABEL_KEY.fullmatch(key) or key.startswith("__") or key in RESERVED:
            raise ConfigError(
                f"{at}: label {key!r}: lower-case letters, digits and _ (not starting with a "
                "digit or __), "
                f"not one of {', '.join(sorted(RESERVED))}",
                _HINT,
            )
        if not isinstance(value, str):
            raise ConfigError(f"{at}: label {key!r} must be a string", _HINT)
    return tuple(labels.items())


def _unique(targets: tuple[Target, ...], lines: _Lines) -> None:
    seen: dict[tuple[str, str | None], int] = {}
    for i, t in enumerate(targets):
        for key, value in (("name", t.name), ("uri", t.uri)):
            first = seen.setdefault((key, value), i)
            if first != i:
                raise ConfigError(
                    f"{lines.at(i, key)}: duplicate {key} {value!r} (first at "
                    f"{lines.at(first, key)})",
                    _HINT,
                )
