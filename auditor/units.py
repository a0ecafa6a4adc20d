"""Sizes and ratios for humans: the one implementation used by the CLI, plans and templates.

Figures stay integer bytes everywhere else; these functions only turn them into text.
"""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
MINUS = "\u2212"


def iec(n: int | None) -> str:
    """Bytes as an IEC size: 1536 → '1.5 KiB'. None → ''."""
    if n is None:
        return ""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human(n: int | None) -> str:
    """'1.0 GiB (1073741824 B)'; 'none' for None."""
    return "none" if n is None else f"{iec(n)} ({n} B)" if n >= 1024 else f"{n} B"


def exact(n: int | None) -> str:
    """Exact bytes for a title attribute: 1536 → '1,536 bytes'."""
    return "" if n is None else f"{n:,} bytes"


def signed(n: int | None) -> str:
    """A change in bytes: '+1.5 GiB', '-300.0 MiB' (written with U+2212), '±0'; None → 'n/a'."""
    if n is None:
        return "n/a"
    return "±0" if n == 0 else ("+" if n > 0 else MINUS) + iec(abs(n))


def signed_count(n: int | None) -> str:
    """A change in a count: '+3', '-1' (U+2212), '±0'; None → 'n/a'."""
    if n is None:
        return "n/a"
    return "±0" if n == 0 else f"{n:+d}".replace("-", MINUS)


def ratio_text(r: float | None, unknown: str = "?") -> str:
    """2 decimals; 4 when a small non-zero ratio would read as 0.00."""
    if r is None:
        return unknown
    return f"{r:.4f}" if 0 < abs(r) < 0.005 else f"{r:.2f}"
