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


def test_provisioning_policy_per_pool_and_per_host(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(
        '[thresholds]\nexposure_crit = 0.5\n[pools."images"]\nprovisioning = "thin"\n'
        '[pools."kvm1/images"]\nprovisioning = "preallocated"\nused_crit = 95\n'
    )
    cfg = load(str(f))
    assert cfg.provisioning_of("images") == "thin"
    assert cfg.provisioning_of("images", "kvm1") == "preallocated"
    assert cfg.provisioning_of("other") == "any"
    assert cfg.for_pool("images", "kvm1").used_crit == 95.0
    assert cfg.for_pool("images", "kvm2").used_crit == 90.0
    assert cfg.for_pool("images").exposure_crit == 0.5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[thresholds]\nused_warn = 80\n\n[pools."p"]\nprovisioning = "fat"\n', ":5: [pools."),
        ("[thresholds]\n\nexposure_crit = 0\n", "bad.toml:3: [thresholds].exposure_crit"),
        ('[pools."p"]\nused_warn = 70\nused_crit = 60\n', "bad.toml:2:"),
        ('[pools."p"]\nsize = 1\n', "valid keys: used_warn"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(str(f))
    assert needle in str(err.value), str(err.value)
