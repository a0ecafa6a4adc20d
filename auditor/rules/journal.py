"""Operations an auditor run started and never finished (killed: SIGKILL, power loss)."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.models import Finding, FixKind, Severity
from auditor.rules.facts import Facts, finding


def rules(facts: Facts) -> Iterator[Finding]:
    for intent in facts.incomplete:
        proofs = facts.made.get(intent.id, ())
        left = ", ".join(intent.leftovers) or "nothing it recorded"
        yield finding(
            "AUD801", Severity.WARN, intent.host,
            f"{intent.action} {intent.subject}, started {intent.time}, never finished; it may "
            f"have left {left}",
            pool="" if intent.subject.startswith("/") else intent.subject.partition("/")[0],
            fix=FixKind.REMOVE_LEFTOVER if proofs else None, journal_id=intent.id,
        )  # fmt: skip
