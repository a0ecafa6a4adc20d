"""The TOML policy file (``--policy FILE``): thresholds, globally and per pool.

[thresholds]
used_warn = 80          # percent of capacity really used
used_crit = 90
overcommit_warn = 1.5   # provisioned / capacity
overcommit_crit = 2.0

[pools."images"]        # overrides for one pool; same keys
overcommit_crit = 3.0
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from auditor.errors import ConfigError


@dataclass(frozen=True)
class Thresholds:
    used_warn: float = 80.0
    used_crit: float = 90.0
    overcommit_warn: float = 1.5
    overcommit_crit: float = 2.0


KEYS = tuple(f.name for f in fields(Thresholds))


@dataclass(frozen=True)
class Config:
    thresholds: Thresholds = Thresholds()
    pools: Mapping[str, Thresholds] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None

    def for_pool(self, name: str) -> Thresholds:
        """The thresholds that apply to pool ``name``."""
        return self.pools.get(name, self.thresholds)


def _thresholds(table: Any, where: str, base: Thresholds) -> Thresholds:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    values: dict[str, float] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}", f"valid keys: {', '.join(KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}.{key}: must be a positive number, not {value!r}")
        if key.startswith("used_") and value > 100:
            raise ConfigError(f"{where}.{key}: is a percentage of capacity (0-100], not {value}")
        values[key] = float(value)
    out = replace(base, **values)
    if out.used_warn > out.used_crit:
        raise ConfigError(f"{where}: used_warn ({out.used_warn}) exceeds used_crit")
    if out.overcommit_warn > out.overcommit_crit:
        raise ConfigError(
            f"{where}: overcommit_warn ({out.overcommit_warn}) exceeds overcommit_crit"
        )
    return out


def parse(doc: Mapping[str, Any], source: str | None = None) -> Config:
    """Validate a parsed TOML document; every error names the key."""
    where = source or "config"
    for key in doc:
        if key not in ("thresholds", "pools"):
            raise ConfigError(
                f"{where}: unknown table [{key}]", "valid: [thresholds], [pools.NAME]"
            )
    base = _thresholds(doc.get("thresholds", {}), f"{where}: [thresholds]", Thresholds())
    pools_doc = doc.get("pools", {})
    if not isinstance(pools_doc, dict):
        raise ConfigError(f"{where}: [pools] must hold one table per pool")
    pools = {
        name: _thresholds(table, f'{where}: [pools."{name}"]', base)
        for name, table in pools_doc.items()
    }
    return Config(thresholds=base, pools=MappingProxyType(pools), source=source)


DEFAULT_POLICY = "/etc/auditor/policy.toml"


def load(path: str | None) -> Config:
    """Read the policy file; no path means ``DEFAULT_POLICY`` if it exists, else the
    built-in defaults."""
    if path is None:
        if not os.path.isfile(DEFAULT_POLICY):
            return Config()
        path = DEFAULT_POLICY
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"policy file {path} not found") from exc
    except PermissionError as exc:
        raise ConfigError(f"policy file {path}: permission denied") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from exc
    return parse(doc, path)
