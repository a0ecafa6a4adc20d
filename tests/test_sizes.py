"""Sizes as virsh reads them."""

from __future__ import annotations

import pytest

from auditor.errors import ConfigError
from auditor.sizes import NewSize, parse_resize, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 1 << 20),
        ("512b", 512),
        ("7bytes", 7),
        ("1K", 1024),
        ("1k", 1024),
        ("1KiB", 1024),
        ("1KB", 1000),
        ("10M", 10 << 20),
        ("10MiB", 10 << 20),
        ("10MB", 10_000_000),
        ("10G", 10 << 30),
        ("5GB", 5_000_000_000),
        ("2T", 2 << 40),
        ("2TB", 2 * 10**12),
        ("1P", 1 << 50),
        ("1PB", 10**15),
        ("1EiB", 1 << 60),
        (" 3G ", 3 << 30),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1G", "+1G", "10X", "10GiBB", "1 G", "ten"])
def test_bad_sizes_name_the_value(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_size(text)
    assert repr(text) in str(err.value)


def test_parse_resize() -> None:
    assert parse_resize("20G") == NewSize(20 << 30)
    assert parse_resize("+5G") == NewSize(5 << 30, delta=True)
    assert parse_resize("-1M") == NewSize(-(1 << 20), delta=True)
    assert parse_resize("+5G").resolve(10 << 30) == 15 << 30
    assert parse_resize("-1G").resolve(10 << 30) == 9 << 30
    assert parse_resize("4G").resolve(10 << 30) == 4 << 30
    with pytest.raises(ConfigError):
        parse_resize("+")
