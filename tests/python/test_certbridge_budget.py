# certbridge: unit tests of the fleet rate budget planner (plugins/module_utils/certbridge_budget.py).
"""Admission up to each limit, deferral with the binding limit and the earliest time, history,
round-robin fairness, the registered domain from the Public Suffix List, the switches."""

import certbridge_budget as budget
import pytest

NOW = 1_800_000_000
HOUR = 3600
LE = {"registered_domain": (50, budget.WEEK), "exact_set": (5, budget.WEEK),
      "new_orders": (300, budget.THREE_HOURS), "new_accounts": (10, budget.THREE_HOURS)}


def registered(name):
    """A stand-in for the PSL in tests that are not about it: the last two labels."""
    return ".".join(name.removeprefix("*.").split(".")[-2:])


def held(host, cert, names, egress="nat", new_account=True):
    return {"host": host, "cert": cert, "names": names, "egress": egress, "new_account": new_account,
            "domains": [registered(n) for n in names]}


def hosts(n, domain="example.org", **kw):
    return [held("h%03d" % i, "main", ["h%03d.%s" % (i, domain)], **kw) for i in range(n)]


def test_the_registered_domain_budget_admits_fifty_and_defers_the_rest_with_when():
    out = budget.plan(hosts(60, new_account=False), [], LE, now=NOW)
    assert sum(len(c) for c in out["admit"].values()) == 50
    deferred = out["deferred"]
    assert sorted(deferred) == ["h%03d" % i for i in range(50, 60)]
    first = deferred["h050"]["main"]
    assert first["reason"] == "rate_budget"
    assert first["limit"].startswith("registered_domain: 50 per 7 d per registered domain (example.org)")
    # One token back every 7 d / 50 = 12096 s; the queue is served one token apart.
    assert first["earliest"] == NOW + 12096
    assert deferred["h059"]["main"]["earliest"] == NOW + 10 * 12096
    assert first["earliest_utc"].endswith("Z")


def test_other_registered_domains_have_their_own_budget():
    reqs = hosts(55, "example.org", new_account=False) + [
        held("x%d" % i, "main", ["x%d.example.net" % i], new_account=False) for i in range(5)]
    out = budget.plan(reqs, [], LE, now=NOW)
    assert all(h in out["admit"] for h in ("x0", "x4"))
    assert len(out["deferred"]) == 5


def test_a_cert_over_several_domains_needs_room_in_each():
    limits = {"registered_domain": (1, budget.WEEK)}
    reqs = [held("a", "one", ["a.example.org"]), held("b", "two", ["b.example.net", "b.example.org"])]
    out = budget.plan(reqs, [], limits, now=NOW)
    assert out["admit"] == {"a": ["one"]}
    assert "example.org" in out["deferred"]["b"]["two"]["limit"]


def test_history_of_earlier_pulses_uses_up_the_budget_and_ages_out():
    past = [dict(held("p%02d" % i, "main", ["p%02d.example.org" % i]), at=NOW - HOUR) for i in range(50)]
    out = budget.plan(hosts(1, new_account=False), past, LE, now=NOW)
    assert out["admit"] == {} and "h000" in out["deferred"]
    old = [dict(p, at=NOW - budget.WEEK - 1) for p in past]
    assert budget.plan(hosts(1, new_account=False), old, LE, now=NOW)["admit"] == {"h000": ["main"]}


def test_a_burst_older_than_the_period_still_counts_while_the_bucket_stayed_full():
    # 50 at once 7 d + 1 h ago, then one every 7 d / 50 since: Let's Encrypt's bucket is still
    # empty now. Counting only the last 7 days would admit (and the CA would answer 429).
    interval = budget.WEEK / 50
    start = NOW - budget.WEEK - HOUR
    past = [dict(held("b%02d" % i, "main", ["b%02d.example.org" % i]), at=start) for i in range(50)]
    past += [dict(held("s%02d" % k, "main", ["s%02d.example.org" % k]), at=int(start + k * interval))
             for k in range(1, 51)]
    out = budget.plan(hosts(1, new_account=False), past, LE, now=NOW)
    assert out["admit"] == {} and out["deferred"]["h000"]["main"]["earliest"] > NOW


def test_new_accounts_behind_one_egress_are_ten_per_three_hours():
    out = budget.plan(hosts(15), [], LE, now=NOW)
    assert len(out["admit"]) == 10
    limit = out["deferred"]["h010"]["main"]["limit"]
    assert limit.startswith("new_accounts: 10 per 3 h per egress address (nat)")
    assert out["deferred"]["h010"]["main"]["earliest"] == NOW + 18 * 60
    # Hosts behind their own addresses are not limited together.
    own = [dict(r, egress=r["host"]) for r in hosts(15)]
    assert len(budget.plan(own, [], LE, now=NOW)["admit"]) == 15


def test_one_host_makes_one_account_for_all_its_certs():
    reqs = [held("a", "c%d" % i, ["c%d.example.org" % i]) for i in range(12)]
    out = budget.plan(reqs, [], LE, now=NOW)
    assert len(out["admit"]["a"]) == 12


def test_the_exact_set_limit_counts_the_same_names_across_hosts():
    reqs = [held("h%d" % i, "shared", ["www.example.org", "example.org"], new_account=False) for i in range(7)]
    out = budget.plan(reqs, [], LE, now=NOW)
    assert len(out["admit"]) == 5
    assert out["deferred"]["h5"]["shared"]["limit"].startswith("exact_set: 5 per 7 d")


def test_a_limit_set_to_zero_is_off():
    limits = budget.budgets(lambda name, default=None: 0 if name == "letsencrypt_rate_registered_domain" else default)
    assert "registered_domain" not in limits and limits["exact_set"] == (5, budget.WEEK)
    out = budget.plan(hosts(80, new_account=False), [], limits, now=NOW)
    assert len(out["admit"]) == 80


def test_a_bad_budget_value_names_the_variable():
    with pytest.raises(ValueError, match="letsencrypt_rate_exact_set"):
        budget.budgets(lambda name, default=None: "many" if name == "letsencrypt_rate_exact_set" else default)
    with pytest.raises(ValueError, match="letsencrypt_rate_new_orders must be 0 or more"):
        budget.budgets(lambda name, default=None: -1 if name == "letsencrypt_rate_new_orders" else default)


def test_auto_is_on_for_lets_encrypt_production_only():
    assert budget.enabled("auto", "https://acme-v02.api.letsencrypt.org/directory")
    assert not budget.enabled("auto", "https://acme-staging-v02.api.letsencrypt.org/directory")
    assert not budget.enabled("auto", "https://127.0.0.1:14000/dir")
    assert budget.enabled(True, "https://127.0.0.1:14000/dir")
    assert budget.enabled("true", "x") and not budget.enabled("false", "https://acme-v02.api.letsencrypt.org/directory")


def test_collect_asks_round_robin_and_reads_history_and_accounts():
    results = {
        "a": {"certs": {"one": {"action": "issue", "reason": "missing", "held": True},
                        "two": {"action": "issue", "reason": "missing", "held": True}}},
        "b": {"certs": {"web": {"action": "issue", "reason": "names_changed", "held": True, "not_after": NOW + 9},
                        "old": {"action": "ok", "reason": "valid", "not_after": NOW + 9, "new_cert_at": NOW - HOUR}}},
        "c": {"certs": {"ok": {"action": "ok", "reason": "valid", "not_after": NOW + 9,
                               "new_cert_at": NOW - budget.WEEK - 5}}},
    }
    names = {"a": {"one": ["one.example.org"], "two": ["two.example.org"]},
             "b": {"web": ["web.example.org"], "old": ["old.example.org"]}, "c": {"ok": ["ok.example.org"]}}
    reqs, hist = budget.collect(results, lambda h: names[h], lambda h: "nat", registered, NOW)
    assert [(r["host"], r["cert"]) for r in reqs] == [("a", "one"), ("b", "web"), ("a", "two")]
    assert [r["new_account"] for r in reqs] == [True, False, True]
    assert [(h["host"], h["at"]) for h in hist] == [("b", NOW - HOUR), ("c", NOW - budget.WEEK - 5)]
    assert hist[0]["domains"] == ["example.org"]


def test_the_public_suffix_list_gives_the_registered_domain():
    reg = budget.registered_domain_function()
    assert reg("www.example.co.uk") == "example.co.uk"
    assert reg("*.a.b.example.org") == "example.org"
    assert reg("someone.github.io") == "someone.github.io"


def test_deferrals_reach_the_round_metrics_file_with_reason_and_time(tmp_path):
    deferred = {"web02": {"main": {"reason": "rate_budget", "limit": "registered_domain: 50 per 7 d per registered "
                                   "domain (example.org)", "earliest": 1_800_012_096}}}
    crowded = [{"host": "web03", "cert": "mail", "refused": False, "reason": "deferred to the next pulse"},
               {"host": "web04", "cert": "big", "refused": True, "reason": "not published"}]
    text = budget.deferral_metrics(deferred, crowded, now=1_800_000_000)
    assert ('certbridge_cert_deferred_until_seconds{host="web02",cert="main",reason="rate_budget",'
            'limit="registered_domain"} 1800012096') in text
    assert ('certbridge_cert_deferred_until_seconds{host="web03",cert="mail",reason="crowded",'
            'limit="max_values_per_name"} 1800000000') in text
    assert "web04" not in text  # refused outright: a failure, not a deferral
    assert 'certbridge_round_deferred_certs{reason="rate_budget"} 1' in text
    path = tmp_path / "round.prom"
    assert budget.write_textfile(str(path), text)
    assert path.read_text() == text and oct(path.stat().st_mode & 0o777) == "0o644"
    mtime = path.stat().st_mtime_ns
    assert not budget.write_textfile(str(path), text)  # unchanged: not rewritten
    assert path.stat().st_mtime_ns == mtime
    # A link planted at the path is replaced, never written through.
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    path.unlink()
    path.symlink_to(target)
    assert budget.write_textfile(str(path), text)
    assert target.read_text() == "keep" and not path.is_symlink() and path.read_text() == text
    empty = budget.deferral_metrics({}, [], now=1)
    assert "certbridge_cert_deferred_until_seconds{" not in empty
    assert 'certbridge_round_deferred_certs{reason="crowded"} 0' in empty
