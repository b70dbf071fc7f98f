# certbridge: a simulated first rollout - the fleet rate budget against a CA that answers 429s.
"""A fleet's first rollout and its renewals, on an injected clock, in-process.

Each pulse does what play 1 and the round do (certbridge_budget.collect and plan over the
hosts' decisions: new certs held, renewals ordered at once naming the cert they replace); a
model of Let's Encrypt's CA (``CaModel``: Boulder's token buckets, its renewal exemptions, a
429 with the seconds to wait) answers every account and order. A 429 is handled as acme_request
does: that cert backs off until the CA's Retry-After, at least to the next pulse.

The CA model is Python, like the planner, so the simulation runs the planner's own code without
Ansible or a CA process: 3,600 pulses take seconds. crates/certbridge-testsupport's
rate_limits.rs is the same model in Rust, which the CA proxy in front of Pebble enforces for
real pulses (tests/pulse_paths.rs); both follow letsencrypt.org/docs/rate-limits.

    python3 bench/rollout.py [--hosts 300] [--days 150] [--no-budget]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "module_utils"))
import certbridge_budget as budget  # noqa: E402

DAY = 86400
LIFETIME = 90 * DAY
RENEW_AT = 60 * DAY  # one third of the lifetime left (ARI agrees for Let's Encrypt's 90 d)


def lets_encrypt_limits() -> dict:
    return {k: (count, period) for k, (_, count, period, _) in budget.LIMITS.items()}


class CaModel:
    """Let's Encrypt's limits as Boulder applies them: GCRA buckets checked and spent together
    at newOrder (orders per account, certificates per registered domain and per exact set);
    renewals of an issued name set skip the first two, ``replaces`` skips all; new accounts per
    IP are spent when an account is made. Refusals are counted."""

    def __init__(self, limits: dict, registered):
        self.limits, self.registered = limits, registered
        self.tat: dict = {}
        self.issued_sets: set = set()
        self.refused: list = []  # (time, limit)

    def _decide(self, key, limit, now):
        count, period = self.limits[limit]
        interval = period / count
        new_tat = max(self.tat.get(key, now), now) + interval
        return (new_tat, 0.0) if new_tat - now <= period + 1e-9 else (None, new_tat - now - period)

    def new_account(self, ip, now):
        """None, or the seconds to wait (a 429)."""
        if "new_accounts" not in self.limits:
            return None
        tat, wait = self._decide(("acct", ip), "new_accounts", now)
        if tat is None:
            self.refused.append((now, "new_accounts"))
            return wait
        self.tat[("acct", ip)] = tat
        return None

    def new_order(self, account, names, replaces, now):
        """None when the order is accepted (and issued), else the seconds to wait (a 429)."""
        names = frozenset(n.lower() for n in names)
        if not replaces:
            renewal = names in self.issued_sets
            keys = []
            if not renewal and "new_orders" in self.limits:
                keys.append((("orders", account), "new_orders"))
            if not renewal and "registered_domain" in self.limits:
                keys += [(("domain", d), "registered_domain") for d in sorted({self.registered(n) for n in names})]
            if "exact_set" in self.limits:
                keys.append((("set", names), "exact_set"))
            decided = [(key, limit) + self._decide(key, limit, now) for key, limit in keys]
            worst = max(decided, key=lambda d: d[3], default=None)
            if worst is not None and worst[2] is None:
                self.refused.append((now, worst[1]))
                return worst[3]
            for key, _, tat, _ in decided:
                self.tat[key] = tat
        self.issued_sets.add(names)
        return None


def simulate(hosts: int = 300, days: int = 150, pulse_every: int = 3600, use_budget: bool = True,
             planner_limits: dict | None = None, ca_limits: dict | None = None) -> dict:
    """Runs the rollout; returns the issuance times, the CA's refusals and the renewal delays.

    ``planner_limits`` / ``ca_limits``: Let's Encrypt's by default (a test gives the planner
    looser ones to show the CA model catches it)."""
    try:
        registered = budget.registered_domain_function()
    except ValueError:  # no publicsuffixlist in this Python: the same answer for example.org
        def registered(name):
            return ".".join(name.split(".")[-2:])
    planner_limits = planner_limits or lets_encrypt_limits()
    ca = CaModel(ca_limits or lets_encrypt_limits(), registered)
    start = 1_800_000_000
    names = {f"h{i:03d}": [f"h{i:03d}.example.org"] for i in range(hosts)}
    cert = {}  # host -> {"issued": t, "new_cert_at": t}
    account = set()
    backoff = {}  # host -> time of its next try after a 429
    first_issued, renewals = {}, []  # renewals: (due, ordered)
    t = start
    while t < start + days * DAY:
        results, renew = {}, []
        for h in names:
            c = cert.get(h)
            if c is None:
                if backoff.get(h, 0) > t:
                    results[h] = {"certs": {"main": {"action": "backoff", "reason": "backoff"}}}
                    continue
                # Held: a new cert waits for the round (when the budget plans); otherwise ordered.
                results[h] = {"certs": {"main": {"action": "issue", "reason": "missing", "held": use_budget}}}
            elif t >= c["issued"] + RENEW_AT:
                renew.append(h)
                results[h] = {"certs": {"main": {"action": "issue", "reason": "ari_window",
                                                 "not_after": c["issued"] + LIFETIME, "new_cert_at": c["new_cert_at"]}}}
            else:
                results[h] = {"certs": {"main": {"action": "ok", "reason": "valid",
                                                 "not_after": c["issued"] + LIFETIME, "new_cert_at": c["new_cert_at"]}}}
        # Renewals are never held: play 1 orders them, naming the cert they replace.
        for h in renew:
            due = cert[h]["issued"] + RENEW_AT
            if ca.new_order(h, names[h], True, t) is None:
                renewals.append((due, t))
                cert[h]["issued"] = t
        if use_budget:
            held = [h for h, r in results.items() if r["certs"]["main"].get("held")]
            admitted = []
            if held:
                reqs, hist = budget.collect(results, lambda h: {"main": names[h]}, lambda h: "nat", registered, t)
                plan = budget.plan(reqs, hist, planner_limits, now=t)
                admitted = [h for h in plan["admit"]]
        else:
            admitted = [h for h, r in results.items() if r["certs"]["main"].get("action") == "issue"
                        and h not in cert]
        for h in admitted:
            if h not in account:
                wait = ca.new_account("nat", t)
                if wait is not None:
                    backoff[h] = t + wait
                    continue
                account.add(h)
            wait = ca.new_order(h, names[h], False, t)
            if wait is not None:
                backoff[h] = t + wait
                continue
            cert[h] = {"issued": t, "new_cert_at": t}
            first_issued[h] = t
        t += pulse_every
    issued_days = sorted((at - start) // DAY for at in first_issued.values())
    domain_count, domain_period = lets_encrypt_limits()["registered_domain"]
    # The registered-domain bucket alone: `count` at once, then one per period / count.
    earliest = max(0, hosts - domain_count) * domain_period / domain_count
    return {
        "hosts": hosts, "days": days, "budget": use_budget,
        "issued": len(first_issued),
        "refused": len(ca.refused),
        "refused_by": {lim: sum(1 for _, x in ca.refused if x == lim) for lim in sorted({x for _, x in ca.refused})},
        "last_day": issued_days[-1] if issued_days else None,
        "earliest_day": math.floor(earliest / DAY),
        "last_week": issued_days[-1] // 7 if issued_days else None,
        "earliest_week": math.floor(earliest / DAY) // 7,
        "per_day": [(d, issued_days.count(d)) for d in sorted(set(issued_days))],
        "per_week": [(w, sum(1 for d in issued_days if d // 7 == w)) for w in sorted({d // 7 for d in issued_days})],
        "renewals": len(renewals),
        "renewal_max_delay": max((o - d for d, o in renewals), default=0),
    }


def lines(res: dict) -> list[str]:
    out = [f"rollout: {res['hosts']} hosts, one registered domain, one egress address, a pulse every hour, "
           f"{res['days']} days, budget {'on' if res['budget'] else 'off'}",
           f"rollout: {res['issued']} issued, last on day {res['last_day']} (week {res['last_week']}); "
           f"earliest possible: day {res['earliest_day']} (week {res['earliest_week']})",
           f"rollout: {res['refused']} answers 429 from the CA {res['refused_by'] or ''}".rstrip(),
           f"rollout: {res['renewals']} renewals, the longest wait after due {res['renewal_max_delay']} s "
           f"(a pulse is {3600} s)",
           "rollout: issued per week: " + ", ".join(f"w{w}: {n}" for w, n in res["per_week"]),
           "rollout: issued per day (first 8 days): " + ", ".join(f"d{d}: {n}" for d, n in res["per_day"][:8])]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=300)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--no-budget", action="store_true", help="the budget off: every new cert is ordered")
    a = parser.parse_args()
    res = simulate(a.hosts, a.days, use_budget=not a.no_budget)
    print("\n".join(lines(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
