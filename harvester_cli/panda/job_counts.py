"""How many jobs PanDA has activated for a queue: per resource type and prodSourceLabel when the server
answers statistics/active_job_detailed_stats_by_site (panda-server 0.7.0 on), else per site from
statistics/active_job_stats_by_site. Both come from a view the server refreshes every minute or two,
so the counts lag (the planner allows for that, see steps/planner.py).

Both routes answer success:false with no data when nothing is active anywhere; the detailed one also when
the server's database lacks the resource type column. So a refusal of the detailed route falls back to
the site totals, and only the site route's refusal means "no jobs".
"""

from __future__ import annotations

from dataclasses import dataclass

from harvester_cli.errors import PandaNoSuchCall, PandaRefused

DETAILED = "per resource type"
TOTALS = "site totals"
NOT_ASKED = "not asked"   # no queue of the run needed the counts


@dataclass(frozen=True)
class ActivatedJobs:
    source: str                                     # DETAILED or TOTALS
    detailed: dict[str, dict[str, dict[str, int]]]  # site -> resource type -> prodSourceLabel -> activated
    totals: dict[str, int]                          # site -> activated, every label and type

    def for_queue(self, site: str, label: str, resource_types: list[str]) -> tuple[int, dict[str, int] | None]:
        """(activated jobs the queue's pilots can take, the same per resource type or None if unknown)."""
        if self.source != DETAILED:
            return self.totals.get(site, 0), None
        by_type = {rt: int(self.detailed.get(site, {}).get(rt, {}).get(label, 0)) for rt in resource_types}
        return sum(by_type.values()), by_type


def _activated(by_status) -> int:
    return int(by_status.get("activated", 0)) if isinstance(by_status, dict) else 0


def fetch(panda) -> ActivatedJobs:
    """From the PanDA client `panda`; raises PandaError when PanDA cannot say at all."""
    try:
        data = panda.active_job_detailed_stats_by_site()
        detailed = {site: {rt: {label: _activated(statuses) for label, statuses in by_label.items()}
                           for rt, by_label in by_type.items() if isinstance(by_label, dict)}
                    for site, by_type in data.items() if isinstance(by_type, dict)}
        totals = {site: sum(n for by_label in by_type.values() for n in by_label.values())
                  for site, by_type in detailed.items()}
        return ActivatedJobs(DETAILED, detailed, totals)
    except (PandaRefused, PandaNoSuchCall):
        pass
    try:
        stats = panda.active_job_stats_by_site()
    except PandaRefused as exc:
        if "job statistics" in exc.message:   # PanDA's answer when no job is active anywhere
            return ActivatedJobs(TOTALS, {}, {})
        raise
    return ActivatedJobs(TOTALS, {}, {site: _activated(by_status) for site, by_status in stats.items()})
