"""The TOML policy file: defaults, per-pool overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.config import load
from auditor.errors import ConfigError


def test_defaults_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(
        "[thresholds]\noverstate = 1\n".replace("overstate", "overcommit_warn")
        + '[pools."fast ssd"]\novercommit_crit = 3\n'
    )
    cfg = load(str(f))
    assert cfg.thresholds.overcommit_warn == 1.0 and cfg.thresholds.used_crit == 90.0
    assert cfg.for_pool("fast ssd").overcommit_crit == 3.0
    assert cfg.for_pool("fast ssd").overcommit_warn == 1.0  # inherits [thresholds]
    assert cfg.for_pool("other").overcommit_crit == 2.0
    assert load(None).thresholds.used_warn == 80.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[thresholds]\nused_wran = 1\n", "used_wran"),
        ("[thresholds]\nused_warn = -1\n", "used_warn"),
        ("[thresholds]\nused_warn = 'x'\n", "used_warn"),
        ("[thresholds]\nused_crit = 150\n", "used_crit"),
        ("[thresholds]\nused_warn = 95\n", "used_warn"),
        ("[report]\nx = 1\n", "[report]"),
        ('[pools."p"]\novercommit_warn = 9\n', "overcommit_warn"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load(str(f))
    assert needle in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent/policy.toml")
