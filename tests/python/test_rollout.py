# certbridge: the fleet rate budget over a simulated first rollout, against a CA model that answers 429s.
"""bench/rollout.py: 300 hosts under one registered domain behind one egress address, a pulse
every hour on an injected clock, the planner (certbridge_budget) deciding, a model of Let's
Encrypt's CA (Boulder's buckets and renewal exemptions) answering every account and order."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import rollout  # noqa: E402


def test_the_planner_never_exceeds_a_limit_and_finishes_in_the_earliest_week():
    res = rollout.simulate(hosts=300, days=70)
    assert res["refused"] == 0, res["refused_by"]
    assert res["issued"] == 300
    # 50 at once, then one per 202 minutes: the 300th fits on day 35 (week 5), not later.
    assert (res["earliest_week"], res["last_week"]) == (5, 5), res["per_week"]
    # The first 56 (day 0) renew from day 60: ordered at the pulse they fall due, never held.
    assert res["renewals"] >= 56
    assert res["renewal_max_delay"] < 3600


def test_the_ca_model_refuses_what_a_planner_with_a_looser_limit_admits():
    # The check above could fail: a planner that believes in 60 per week gets 429s.
    loose = rollout.lets_encrypt_limits()
    loose["registered_domain"] = (60, loose["registered_domain"][1])
    res = rollout.simulate(hosts=120, days=3, planner_limits=loose)
    assert res["refused"] > 0
    assert res["refused_by"].get("registered_domain", 0) > 0


def test_without_the_budget_the_ca_answers_429s_and_backoff_still_converges():
    res = rollout.simulate(hosts=300, days=40, use_budget=False)
    assert res["refused_by"].get("registered_domain", 0) > 0
    assert res["refused_by"].get("new_accounts", 0) > 0
    assert res["issued"] == 300
