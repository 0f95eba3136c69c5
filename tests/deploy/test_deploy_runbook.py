"""RUNBOOK.md and INCIDENT_TEMPLATE.md: every alert's runbook_url lands on a section of the
runbook with symptom, check and action; every failure mode of the degradation table
(docs/ARCHITECTURE.md) has one; the alerts carry severity, summary and `for`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from deploy_support import ROOT, alert_rules

RUNBOOK = ROOT / "RUNBOOK.md"
FAILURE_MODES = [
    "reranker-failing-or-circuit-breaker-open",
    "redis-down-or-slow",
    "qdrant-or-embedder-down",
    "overload-503",
    "deadline-504",
]


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    """anchor -> text of the section (up to the next heading of the same or a higher level)."""
    text = RUNBOOK.read_text()
    heads = list(re.finditer(r"^(#{1,6}) (.+)$", text, flags=re.M))
    out = {}
    for i, h in enumerate(heads):
        level = len(h.group(1))
        end = next((n.start() for n in heads[i + 1 :] if len(n.group(1)) <= level), len(text))
        out[slug(h.group(2))] = text[h.end() : end]
    return out


def test_slug_matches_github() -> None:
    assert slug("RagGateway5xxRatioHigh") == "raggateway5xxratiohigh"
    assert slug("Reranker failing or circuit breaker open") == "reranker-failing-or-circuit-breaker-open"
    assert slug("Overload 503") == "overload-503"


def _has_symptom_check_action(body: str) -> bool:
    return all(f"**{word}.**" in body for word in ("Symptom", "Check", "Action"))


def test_alerts_link_to_runbook_sections() -> None:
    secs = sections()
    for rule in alert_rules():
        ann, labels = rule["annotations"], rule["labels"]
        assert labels.get("severity") in {"critical", "warning", "info"}, rule["alert"]
        assert ann.get("summary") and rule.get("for"), rule["alert"]
        url = urlsplit(ann["runbook_url"])
        assert url.path.endswith("/RUNBOOK.md"), ann["runbook_url"]
        assert url.fragment == slug(rule["alert"]), f"{rule['alert']}: anchor {url.fragment}"
        assert url.fragment in secs, f"{rule['alert']}: no RUNBOOK.md section #{url.fragment}"
        assert _has_symptom_check_action(secs[url.fragment]), f"{rule['alert']}: symptom/check/action missing"


def test_every_failure_mode_has_a_section() -> None:
    secs = sections()
    for anchor in FAILURE_MODES:
        assert anchor in secs, f"RUNBOOK.md lacks #{anchor}"
        assert _has_symptom_check_action(secs[anchor]), anchor


def test_internal_links_resolve() -> None:
    secs = sections()
    links = re.findall(r"\]\(#([\w-]+)\)", RUNBOOK.read_text())
    assert links
    assert not [a for a in links if a not in secs]


def test_deployment_section() -> None:
    body = sections()["deployment"]
    for needle in (
        "docker compose -f docker/docker-compose.yml up -d --build",
        "scripts/qdrant_bootstrap.py",
        'hey -z 30s -c 20 -m POST -d \'{"q":"test","k":50}\' http://localhost:8080/rag',
        "kubectl argo rollouts get rollout",
        "kubectl argo rollouts promote",
        "kubectl argo rollouts abort",
    ):
        assert needle in body, needle


def test_incident_template_is_star_with_timeline_and_follow_ups() -> None:
    text = (ROOT / "INCIDENT_TEMPLATE.md").read_text()
    heads = [h.strip() for h in re.findall(r"^##+ (.+)$", text, flags=re.M)]
    for h in ("Situation", "Task", "Action", "Timeline", "Result", "Follow-ups"):
        assert h in heads, h
    star = [heads.index(h) for h in ("Situation", "Task", "Action", "Result")]
    assert star == sorted(star), "STAR order"
