"""Sizes as virsh reads them: plain bytes, or an integer with a unit suffix.

``K M G T P E`` (also ``KiB`` ... ``EiB``) are powers of 1024, ``KB MB GB TB PB EB`` powers of
1000, ``B`` is bytes; case does not matter. For resize, ``+SIZE`` grows by SIZE and ``-SIZE``
shrinks by SIZE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.errors import ConfigError

_PREFIXES = "kmgtpe"  # kilo ... exa
_SIZE = re.compile(r"\s*(\d+)([a-zA-Z]*)\s*")
HINT = "sizes are whole numbers with an optional unit: 1048576, 512M, 10G, 1GiB, 5GB"


def parse_size(text: str) -> int:
    """Bytes in ``text`` ('10G' → 10737418240, '5GB' → 5000000000); ConfigError if malformed."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ConfigError(f"bad size {text!r}", HINT)
    number, suffix = int(match.group(1)), match.group(2).lower()
    if suffix in ("", "b", "byte", "bytes"):
        return number
    power, rest = _PREFIXES.find(suffix[0]) + 1, suffix[1:]
    if power == 0 or rest not in ("", "ib", "b"):
        raise ConfigError(f"bad size {text!r}: unknown unit {match.group(2)!r}", HINT)
    base = 1000 if rest == "b" else 1024
    for _ in range(power):
        number *= base
    return number


@dataclass(frozen=True)
class NewSize:
    """A resize request: an absolute size, or a change (``+SIZE`` / ``-SIZE``)."""

    value: int
    delta: bool = False  # value is signed: added to the current size

    def resolve(self, current: int) -> int:
        """The new size for a volume of ``current`` bytes."""
        return current + self.value if self.delta else self.value


def parse_resize(text: str) -> NewSize:
    """'20G' → absolute; '+5G' → grow by 5 GiB; '-1G' → shrink by 1 GiB."""
    stripped = text.strip()
    if stripped[:1] in ("+", "-"):
        amount = parse_size(stripped[1:])
        return NewSize(amount if stripped[0] == "+" else -amount, delta=True)
    return NewSize(parse_size(stripped))
