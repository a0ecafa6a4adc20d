"""The TOML policy file (``--policy FILE``): thresholds and provisioning, globally and per pool.

[thresholds]
used_warn = 80          # percent of capacity really used
used_crit = 90
overcommit_warn = 1.5   # provisioned / capacity
overcommit_crit = 2.0
exposure_crit = 1.0     # exposure / usable free: above 1 the pool overflows if its thin disks fill

[pools."images"]        # overrides for one pool (or "HOST/POOL" for one host's); same keys, plus
overcommit_crit = 3.0
provisioning = "thin"   # thin, preallocated or any (default): what its volumes must be

Every error names the key and its line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from auditor.errors import ConfigError

PROVISIONING = ("thin", "preallocated", "any")
DEFAULT_POLICY = "/etc/auditor/policy.toml"


@dataclass(frozen=True)
class Thresholds:
    used_warn: float = 80.0
    used_crit: float = 90.0
    overcommit_warn: float = 1.5
    overcommit_crit: float = 2.0
    exposure_crit: float = 1.0


KEYS = tuple(f.name for f in fields(Thresholds))
POOL_KEYS = (*KEYS, "provisioning")


@dataclass(frozen=True)
class Config:
    thresholds: Thresholds = Thresholds()
    pools: Mapping[str, Thresholds] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None
    provisioning: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def for_pool(self, name: str, host: str | None = None) -> Thresholds:
        """The thresholds that apply to pool ``name`` (``HOST/NAME`` first, then ``NAME``)."""
        return self.pools.get(f"{host}/{name}", self.pools.get(name, self.thresholds))

    def provisioning_of(self, name: str, host: str | None = None) -> str:
        """thin, preallocated or any: what the volumes of pool ``name`` must be."""
        return self.provisioning.get(f"{host}/{name}", self.provisioning.get(name, "any"))


class _Source:
    """The policy file's text, to name the line of a key."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.lines = name, text.splitlines()

    def where(self, table: str, key: str | None = None) -> str:
        """'FILE:LINE: [table].key' (the line of the key in that table, if found)."""
        header = re.compile(r"\s*\[\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
        start = next((i for i, ln in enumerate(self.lines) if header.match(ln)), None)
        line = start
        if key is not None and start is not None:
            keyed = re.compile(r"\s*\"?" + re.escape(key) + r"\"?\s*=")
            for i in range(start + 1, len(self.lines)):
                if self.lines[i].lstrip().startswith("["):
                    break
                if keyed.match(self.lines[i]):
                    line = i
                    break
        at = f"{self.name}:{line + 1}" if line is not None else self.name
        return f"{at}: [{table}]" + (f".{key}" if key else "")


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{where}: must be a positive number, not {value!r}",
            "a 0 or a negative value would disable the check; remove the key instead",
        )
    if key.startswith("used_") and value > 100:
        raise ConfigError(f"{where}: is a percentage of capacity (0-100], not {value}")
    return float(value)


def _thresholds(table: Any, src: _Source, name: str, base: Thresholds) -> Thresholds:
    if not isinstance(table, dict):
        raise ConfigError(f"{src.where(name)}: must be a table")
    values: dict[str, float] = {}
    for key, value in table.items():
        if key == "provisioning" and name != "thresholds":
            continue
        if key not in KEYS:
            valid = KEYS if name == "thresholds" else POOL_KEYS
            raise ConfigError(
                f"{src.where(name, key)}: unknown key {key!r}", f"valid keys: {', '.join(valid)}"
            )
        values[key] = _number(value, src.where(name, key), key)
    out = replace(base, **values)
    for low, high in (("used_warn", "used_crit"), ("overcommit_warn", "overcommit_crit")):
        if getattr(out, low) > getattr(out, high):
            key = low if low in values else high
            raise ConfigError(
                f"{src.where(name, key)}: {low} ({getattr(out, low):g}) exceeds {high} "
                f"({getattr(out, high):g})"
            )
    return out


def _provisioning(table: dict[str, Any], src: _Source, name: str) -> str | None:
    value = table.get("provisioning")
    if value is not None and value not in PROVISIONING:
        raise ConfigError(
            f"{src.where(name, 'provisioning')}: must be one of {', '.join(PROVISIONING)}, "
            f"not {value!r}"
        )
    return value


def parse(doc: Mapping[str, Any], source: str | None = None, text: str = "") -> Config:
    """Validate a parsed TOML document; every error names the key (and its line, given the
    file's ``text``)."""
    src = _Source(source or "policy", text)
    for key in doc:
        if key not in ("thresholds", "pools"):
            raise ConfigError(
                f"{src.where(key)}: unknown table [{key}]",
                'valid: [thresholds], [pools."NAME"], [pools."HOST/NAME"]',
            )
    base = _thresholds(doc.get("thresholds", {}), src, "thresholds", Thresholds())
    pools_doc = doc.get("pools", {})
    if not isinstance(pools_doc, dict):
        raise ConfigError(f"{src.where('pools')}: must hold one table per pool")
    pools, provisioning = {}, {}
    for name, table in pools_doc.items():
        where = f'pools."{name}"'
        pools[name] = _thresholds(table, src, where, base)
        kind = _provisioning(table, src, where)
        if kind is not None:
            provisioning[name] = kind
    return Config(base, MappingProxyType(pools), source, MappingProxyType(provisioning))


def load(path: str | None) -> Config:
    """Read the policy file; no path means ``DEFAULT_POLICY`` if it exists, else the
    built-in defaults."""
    if path is None:
        if not os.path.isfile(DEFAULT_POLICY):
            return Config()
        path = DEFAULT_POLICY
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        doc = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"policy file {path} not found") from exc
    except PermissionError as exc:
        raise ConfigError(f"policy file {path}: permission denied") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from exc
    return parse(doc, path, raw.decode("utf-8"))
