"""The report of a fleet: 300 labelled hosts (60,000 volumes) built from models, no libvirt.

Measured 2026-12-02 (2 cores): analyze 2.6 s, Page + render 0.6 s, page 0.9 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from summaries import GiB, disk, fleet_host, summary
from test_report_bed import OUTPUT, chromium, load, screenshot  # noqa: F401  (a fixture)

from auditor.analyze import analyze
from auditor.config import Config
from auditor.models import Finding, Inventory, Labels, Severity, Skip, Summary
from auditor.nightly import build_page
from auditor.report import html
from auditor.report.page import LIST_CAP, VOLUME_CAP, Page, VolumeChange

AT = datetime(2026, 1, 1, tzinfo=UTC)
HOSTS = 300
SITES, CLUSTERS = ("ams", "fra", "lon"), ("a", "b", "c", "d")
USED = {5: 92, 101: 95, 17: 85, 40: 85}  # pool p0 of these hosts: crit, crit, warn, warn
UNLABELLED = {7, 57, 107}
HOSTILE = 250  # its rack label is markup
DOWN = "kvm-down"  # unreachable: a skip of kind host, no HostInventory
SKIPPY = 200  # an image of it could not be read
# 300 hosts: 0.9 MiB measured (2.7 KiB a host, 0.7 KiB a volume row of the pools over a
# threshold); the bound leaves a third for growth but fails a page listing every pool card
# (+3.6 MiB) or every volume (+40 MiB).
MAX_BYTES = 1_250_000


def name(i: int) -> str:
    return f"kvm{i:03}"


def labels(i: int) -> Labels:
    if i in UNLABELLED:
        return ()
    rack = "<script>alert(1)</script>" if i == HOSTILE else f"r{i % 10}"
    return ("site", SITES[i % 3]), ("cluster", CLUSTERS[i // 3 % 4]), ("rack", rack)


def fleet(hosts: int = HOSTS, used: dict[int, int] = USED) -> Summary:
    inventory = [fleet_host(name(i), AT, labels(i), used=used.get(i, 40)) for i in range(hosts)]
    skip = Skip(name(SKIPPY), "image", "/p1/bad.qcow2", "qemu-img: not a qcow2 image")
    if hosts > SKIPPY:
        inventory[SKIPPY] = replace(inventory[SKIPPY], skips=(skip,))
    down = Skip(DOWN, "host", "qemu+ssh://kvm-down/system", "cannot connect: timed out")
    return analyze(Inventory(hosts=tuple(inventory), skips=(down,)))


@pytest.fixture(scope="module")
def page() -> Page:
    return build_page(fleet(), Config(), [], ("hosts.toml",), "9.9")


@pytest.fixture(scope="module")
def text(page: Page) -> str:
    return html.render(page)


@dataclass
class Host:
    name: str
    group: str
    open: bool
    problem: bool


@dataclass
class Fleet(HTMLParser):
    """The groups (name, open) and hosts of the Hosts section, in page order."""

    groups: list[tuple[str, bool]] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    _into: str = ""

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        classes = (a.get("class") or "").split()
        if tag == "details" and "group" in classes:
            self.groups.append(("", "open" in a))
            self._into = "group"
        elif tag == "details" and "host" in classes:
            text = a.get("data-text") or ""
            self.hosts.append(Host(text.split()[0], self.groups[-1][0], "open" in a,
                                   "data-problem" in a))  # fmt: skip
        elif tag == "span" and "gname" in classes:
            self._into = "gname"

    def handle_data(self, data: str) -> None:
        if self._into == "gname":
            self.groups[-1] = (data, self.groups[-1][1])
            self._into = ""


@pytest.fixture(scope="module")
def parsed(text: str) -> Fleet:
    parser = Fleet()
    parser.feed(text)
    return parser


PROBLEMS = {name(i) for i in USED} | {name(SKIPPY), DOWN}


def test_every_host_once_problems_open_healthy_collapsed(parsed: Fleet) -> None:
    assert len(parsed.hosts) == HOSTS + 1
    assert {h.name for h in parsed.hosts} == {name(i) for i in range(HOSTS)} | {DOWN}
    assert {h.name for h in parsed.hosts if h.problem} == PROBLEMS
    assert all(h.open == h.problem for h in parsed.hosts)


def test_groups_by_site_then_cluster_problem_groups_first(parsed: Fleet, page: Page) -> None:
    names = [g for g, _ in parsed.groups]
    assert len(names) == len(set(names)) == len(SITES) * len(CLUSTERS) + 1
    assert "unlabelled" in names and "site=ams · cluster=a" in names
    problem_groups = [g for g, is_open in parsed.groups if is_open]
    assert names[: len(problem_groups)] == problem_groups  # open groups come first
    assert {h.group for h in parsed.hosts if h.problem} == set(problem_groups)
    assert [g.level for g in page.host_groups[:2]] == ["crit", "down"]  # worst first
    first = page.host_groups[0]
    assert first.name == f"site={SITES[5 % 3]} · cluster={CLUSTERS[5 // 3 % 4]}"
    for group in names:  # problem hosts first within each group
        ordered = [h.problem for h in parsed.hosts if h.group == group]
        assert ordered == sorted(ordered, reverse=True)
    unlabelled = {h.name for h in parsed.hosts if h.group == "unlabelled"}
    assert unlabelled == {name(i) for i in UNLABELLED} | {DOWN}


def test_a_host_row_has_its_figures(page: Page, text: str) -> None:
    crit = next(h for h in page.hosts if h.host == name(101))
    assert (crit.level, crit.over, len(crit.pools), crit.skipped) == ("crit", 1, 5, 0)
    assert crit.totals is not None and crit.totals.capacity == 5 * 1000 * 2**30
    assert crit.labels == dict(labels(101))
    down = next(h for h in page.hosts if h.host == DOWN)
    assert (down.level, down.totals, down.problem) == ("down", None, True)
    assert "unreachable: cannot connect: timed out" in text
    skippy = next(h for h in page.hosts if h.host == name(SKIPPY))
    assert (skippy.level, skippy.skipped, skippy.problem) == ("ok", 1, True)
    assert '<span class="chip">site=<b>ams</b></span>' in text


def test_filters_are_there_hidden_until_the_script_runs(parsed: Fleet, text: str) -> None:
    form = next(a for t, a in parsed.tags if t == "form" and a.get("id") == "host-filters")
    assert "hidden" in form  # without JS: no filters, every host listed
    controls = [a.get("data-filter") for t, a in parsed.tags if t in ("select", "input")]
    assert controls[:2] == ["level", "text"]
    options = [a.get("value") for t, a in parsed.tags if t == "option"][:2]
    assert options == ["", "problem"]
    script = re.search(r"<script>(.*)</script>", text, re.S)
    assert script and "host-filters" in script.group(1)
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    csp = next(
        a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert f"script-src 'sha256-{digest}';" in (csp or "") and "unsafe-inline" not in (csp or "")


def test_labels_are_escaped(parsed: Fleet, text: str) -> None:
    assert [t for t, _ in parsed.tags].count("script") == 1
    assert "rack=<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>" in text
    assert "alert(1)</script>" not in text


def test_cards_and_volumes_are_those_over_a_threshold(page: Page, text: str) -> None:
    assert [(c.pool.host, c.level) for c in page.cards] == [
        (name(5), "crit"), (name(101), "crit"), (name(17), "warn"), (name(40), "warn")
    ]  # fmt: skip
    assert text.count('<article class="pool') == len(page.cards)
    assert len(page.shown_disks) == len(USED) * 40 and page.shown_disks[0].disk.host == name(5)
    assert f"Volumes <small>{len(USED) * 40} of {HOSTS * 200}</small>" in text
    assert "Every volume of every host is in <code>volumes.csv</code>" in text


def test_the_volumes_table_is_capped() -> None:
    hot = fleet(60, dict.fromkeys(range(60), 95))
    p = build_page(hot, Config(), [], ("x",), "9.9")
    assert len(p.shown_disks) == VOLUME_CAP < len(hot.disks)
    assert f": the first {VOLUME_CAP}." in html.render(p)


def test_page_size(text: str) -> None:
    size = len(text.encode())
    print(f"fleet page: {HOSTS} hosts, {size / 2**20:.2f} MiB")
    assert size < MAX_BYTES


def test_summary_json_pools_carry_the_labels(page: Page) -> None:
    pools = json.loads(json.dumps(page.document()))["pools"]
    crit = pools[0]
    assert list(crit)[:5] == ["host", "label_site", "label_cluster", "label_rack", "pool"]
    assert (crit["host"], crit["level"]) == (name(5), "crit")
    assert (crit["label_site"], crit["label_rack"]) == (SITES[5 % 3], "r5")
    assert {p["label_site"] for p in pools if p["host"] == name(7)} == {""}


def test_one_host_has_no_hosts_section() -> None:
    one = html.render(build_page(summary(AT, "h1"), Config(), [], ("x",), "9.9"))
    assert 'id="hosts"' not in one and 'id="host-filters"' not in one
    two = build_page(summary(AT, "h1", "h2"), Config(), [], ("x",), "9.9")
    assert [g.name for g in two.host_groups] == ["unlabelled"]
    assert 'id="hosts"' in html.render(two)


def shown(driver: webdriver.Chrome) -> list[str]:
    hosts = driver.find_elements(By.CSS_SELECTOR, "#hosts details.host")
    return [h.get_attribute("data-text").split()[0] for h in hosts if h.is_displayed()]


@pytest.mark.libvirtd  # the full suite (make test), whose set-up installs chromium
def test_fleet_page_in_chromium(
    text: str,
    tmp_path: Path,
    chromium: webdriver.Chrome,  # noqa: F811
) -> None:
    (tmp_path / "report.html").write_text(text)
    chromium.get("about:blank")  # a fresh browser's own chrome:// pages load first
    load(chromium, tmp_path / "report.html")  # no console error: the CSP lets the script run
    out = chromium.find_element(By.ID, "hosts-shown")
    assert chromium.find_element(By.ID, "host-filters").is_displayed()
    assert out.text == f"{HOSTS + 1} of {HOSTS + 1} hosts shown"
    screenshot(chromium, OUTPUT / "report-fleet.png")
    Select(chromium.find_element(By.CSS_SELECTOR, "[data-filter='level']")).select_by_value(
        "problem"
    )
    assert set(shown(chromium)) == PROBLEMS and out.text.startswith(f"{len(PROBLEMS)} of")
    search = chromium.find_element(By.CSS_SELECTOR, "#host-filters [data-filter='text']")
    search.send_keys("KVM10")  # problems only: kvm101 of kvm100..kvm109
    assert shown(chromium) == [name(101)]
    Select(chromium.find_element(By.CSS_SELECTOR, "[data-filter='level']")).select_by_value("")
    assert sorted(shown(chromium)) == [name(i) for i in range(100, 110)]  # groups opened
    search.clear()
    search.send_keys("site=ams")
    assert len(shown(chromium)) == sum(labels(i)[:1] == (("site", "ams"),) for i in range(HOSTS))


def test_a_fleet_page_lists_at_most_the_worst_findings_and_changes(page: Page) -> None:
    """4,200 findings (14 a host) and 3,000 volume changes: the page lists LIST_CAP of each,
    worst first, and says where the rest are; summary.json keeps every one."""
    findings = tuple(
        Finding("AUD301", Severity.INFO if n % 14 else Severity.WARN, name(n // 14), "p0",
                f"v{n}.qcow2", f"finding {n}")
        for n in range(14 * HOSTS)
    )  # fmt: skip
    changes = tuple(
        VolumeChange("added", name(n % HOSTS), "p0", f"new{n}", f"/p0/new{n}", 1 << 30)
        for n in range(3000)
    )
    many = replace(page, findings=findings, volume_changes=changes)
    text = html.render(many)
    assert text.count('<tr class="level-') == LIST_CAP
    assert f"Findings <small>{LIST_CAP} of {len(findings)}</small>" in text
    assert "every finding is in <code>findings.csv</code>" in text
    assert text.count('<tr class="chg-added">') == LIST_CAP
    assert f"{LIST_CAP} of 3000: all are in <code>summary.json</code>" in text
    doc = many.document()
    assert len(doc["findings"]) == len(findings) and len(doc["volume_changes"]) == 3000
    assert len(text.encode()) < MAX_BYTES + LIST_CAP * 600  # ~0.4 KiB a finding row


def test_a_fleet_page_lists_at_most_list_cap_unmanaged_disks() -> None:
    """5 unmanaged disks on each of 300 hosts: the page lists LIST_CAP and says where the
    rest are; the heading counts them all."""
    hosts = [fleet_host(name(i), AT, labels(i)) for i in range(HOSTS)]
    hosts = [
        replace(h, disks=h.disks + tuple(
            disk(h.host, None, f"/srv/{h.host}-{k}.raw", GiB, GiB) for k in range(5)))
        for h in hosts
    ]  # fmt: skip
    p = build_page(analyze(Inventory(hosts=tuple(hosts))), Config(), [], ("x",), "9.9")
    assert len(p.unmanaged) == 5 * HOSTS and len(p.shown_unmanaged) == LIST_CAP
    text = html.render(p)
    section = text[text.index('<section id="unmanaged">') :]
    section = section[: section.index("</section>")]
    assert section.count("<tr><td>kvm") == LIST_CAP
    assert f"Unmanaged disks <small>{5 * HOSTS}</small>" in section
    assert f"{LIST_CAP} of {5 * HOSTS} listed" in section
