# certbridge: unit tests of the pulse's controller-side logic (plugins/module_utils/certbridge_pulse.py).
"""The round from hostvars (failures, unreachable hosts, forced certs, check mode, host patterns,
backoff), a host's view in play 3, the option mapping, handler and variable checks."""

import certbridge_pulse as pulse
import pytest

NOW = 1_800_000_000


def request(pending=(), unacked=(), values=(), certs=None, **extra):
    """A play-1 result as acme_request returns it."""
    out = {"pending": list(pending), "unacked": list(unacked), "certs": certs or {},
           "acme_txt_required": [dict(v) for v in values], "changed": bool(pending)}
    out.update(extra)
    return out


def value(cert, name):
    return {"cert": cert, "name": name, "record": "_acme-challenge." + name.removeprefix("*."), "value": "v-" + name}


def round_(hostvars, play_hosts=None, dns_hosts=("ns1",), extra_vars=()):
    hosts = list(hostvars) if play_hosts is None else play_hosts
    return pulse.build_round(hostvars, hosts, "adns:!disabled", list(dns_hosts), extra_vars, now=NOW)


# -- the round -----------------------------------------------------------------------------------

def test_round_publishes_each_hosts_values_and_finalizes_hosts_with_orders():
    hv = {
        "web1": {"letsencrypt_request": request(["web"], values=[value("web", "a.example.org")],
                                                certs={"web": {"action": "issue", "reason": "missing"}})},
        "web2": {"letsencrypt_request": request(certs={"main": {"action": "ok", "reason": "valid", "not_after": NOW + 9}})},
    }
    r = round_(hv)
    assert [(x["host"], x["cert"], x["name"]) for x in r["records"]] == [("web1", "web", "a.example.org")]
    assert r["finalize"] == ["web1"]
    assert r["decisions"] == {"web1": {"web": "issue (missing)"}}
    assert r["dns_hosts"] == ["ns1"] and r["problem"] == ""
    assert r["warnings"] == []


def test_round_noop_pulse_has_no_dns_host_and_no_play_3():
    hv = {"web1": {"letsencrypt_request": request()}}
    r = round_(hv)
    assert r["records"] == [] and r["finalize"] == [] and r["dns_hosts"] == []


def test_round_failed_host_goes_to_play_3_for_its_report():
    hv = {"web1": {"letsencrypt_request": request(failed=True, msg="CA said no")},
          "web2": {"letsencrypt_request": request(request_failed=True, msg="rate limited")}}
    r = round_(hv)
    assert r["failed"] == {"web1": "CA said no", "web2": "rate limited"}
    assert r["finalize"] == ["web1", "web2"]


def test_round_skips_unreachable_hosts_and_hosts_without_a_result():
    hv = {"down": {"letsencrypt_request": {"unreachable": True, "pending": ["x"]}},
          "new": {},
          "web1": {"letsencrypt_request": request(["w"], values=[value("w", "w.example.org")])}}
    r = round_(hv)
    assert {x["host"] for x in r["records"]} == {"web1"}
    assert r["finalize"] == ["web1"]


def test_round_only_counts_hosts_of_this_play():
    hv = {"web1": {"letsencrypt_request": request(["w"], values=[value("w", "w.example.org")])},
          "stale": {"letsencrypt_request": request(["s"], values=[value("s", "s.example.org")])}}
    r = round_(hv, play_hosts=["web1"])
    assert {x["host"] for x in r["records"]} == {"web1"} and r["hosts"] == ["web1"]


def test_round_warns_about_force_in_inventory_not_from_extra_vars():
    hv = {"web1": {"letsencrypt_request": request(), "letsencrypt_force": True},
          "web2": {"letsencrypt_request": request(), "letsencrypt_force": "false"}}
    warned = round_(hv)["warnings"]
    assert len(warned) == 1 and "web1" in warned[0] and "web2" not in warned[0]
    assert round_(hv, extra_vars={"letsencrypt_force"})["warnings"] == []


def test_round_check_mode_reports_decisions_without_orders():
    # Check mode: acme_request decides but starts no order (nothing pending, no values).
    hv = {"web1": {"letsencrypt_request": request(certs={"web": {"action": "issue", "reason": "due"}})}}
    r = round_(hv)
    assert r["decisions"] == {"web1": {"web": "issue (due)"}}
    assert r["records"] == [] and r["finalize"] == []


def test_round_self_generated_tokens_cover_every_name_of_pending_certs():
    hv = {"gate": {"letsencrypt_request": request(["wild"]), "letsencrypt_self_generate_tokens": "yes",
                   "letsencrypt_certs": {"wild": ["*.S3.example.org.", "s3.example.org:8443"], "other": ["o.example.org"]}}}
    recs = round_(hv)["records"]
    assert [(x["name"], x["record"]) for x in recs] == [
        ("*.s3.example.org", "_acme-challenge.s3.example.org"), ("s3.example.org", "_acme-challenge.s3.example.org")]
    assert len({x["value"] for x in recs}) == 2 and all(len(x["value"]) >= 43 for x in recs)


@pytest.mark.parametrize("dns_hosts", [[], ["adns01", "adns02"]])
def test_round_needs_exactly_one_dns_host_when_values_are_to_be_published(dns_hosts):
    hv = {"web1": {"letsencrypt_request": request(["w"], values=[value("w", "w.example.org")])}}
    r = round_(hv, dns_hosts=dns_hosts)
    assert "must match exactly one host" in r["problem"] and "adns:!disabled" in r["problem"]
    assert r["dns_hosts"] == []


def test_round_uses_the_pattern_result_not_the_group():
    # letsencrypt_dns_group "adns:!disabled" resolved by the playbook: two adns hosts, one disabled.
    hv = {"web1": {"letsencrypt_request": request(["w"], values=[value("w", "w.example.org")]),
                   "groups": {"adns": ["adns01", "adns-old"], "disabled": ["adns-old"]}}}
    r = round_(hv, dns_hosts=["adns01"])
    assert r["problem"] == "" and r["dns_hosts"] == ["adns01"]


def test_round_prune_sends_host_to_play_3():
    hv = {"web1": {"letsencrypt_request": request(), "letsencrypt_prune": True}}
    assert round_(hv)["finalize"] == ["web1"]


def test_round_rejects_a_non_list_of_hosts():
    with pytest.raises(ValueError):
        pulse.build_round({}, "web1", "adns", [])


# -- backoff -------------------------------------------------------------------------------------

def test_backoff_without_certificate_is_named_with_next_try():
    certs = {"web": {"action": "ok", "reason": "backoff", "not_after": None, "retry_not_before": NOW + 3600},
             "old": {"action": "ok", "reason": "backoff", "not_after": NOW - 1, "retry_not_before": NOW + 60},
             "fine": {"action": "ok", "reason": "backoff", "not_after": NOW + 86400, "retry_not_before": NOW + 60},
             "valid": {"action": "ok", "reason": "valid", "not_after": None}}
    warned = pulse.backoff_without_certificate("web1", {"certs": certs}, NOW)
    assert len(warned) == 2
    assert "certificate web holds no certificate" in warned[1] and "2027-01-15T09:00:00Z" in warned[1]
    assert "certificate old holds an expired certificate" in warned[0]


def test_round_carries_backoff_warnings_every_pulse():
    certs = {"web": {"action": "ok", "reason": "backoff", "retry_not_before": NOW + 10}}
    hv = {"web1": {"letsencrypt_request": request(certs=certs)}}
    assert any("web1: certificate web" in w for w in round_(hv)["warnings"])
    assert round_(hv)["finalize"] == []  # nothing to finish: only the warning says it


def shared(cert, name, n):
    """`n` values of one cert, all at the shared owner acme.example.net (acme_request's owner)."""
    return [dict(value(cert, name), value="v%d-%s" % (i, name), owner="acme.example.net") for i in range(n)]


def test_round_caps_values_per_owner_deferring_whole_certs():
    hv = {"web1": {"letsencrypt_request": request(["a", "b"], values=shared("a", "a.example.org", 2)
                                                  + shared("b", "b.example.org", 2))},
          "web2": {"letsencrypt_request": request(["c"], values=[value("c", "c.example.org")])}}
    r = pulse.build_round(hv, ["web1", "web2"], "adns", ["ns1"], now=NOW, max_values_per_name=3)
    # a fits (2 of 3), b would make 4 at the shared owner: deferred whole; c has its own name.
    assert sorted({(x["host"], x["cert"]) for x in r["records"]}) == [("web1", "a"), ("web2", "c")]
    assert [(d["host"], d["cert"], d["owner"], d["refused"]) for d in r["crowded"]] == [
        ("web1", "b", "acme.example.net", False)]
    assert any("web1 cert b: deferred to the next pulse" in w for w in r["warnings"])
    assert r["finalize"] == ["web1", "web2"]


def test_round_refuses_a_cert_that_alone_needs_more_than_the_cap():
    hv = {"web1": {"letsencrypt_request": request(["big"], values=shared("big", "a.example.org", 3))}}
    r = pulse.build_round(hv, ["web1"], "adns", ["ns1"], now=NOW, max_values_per_name=2)
    assert r["records"] == [] and r["dns_hosts"] == []
    (d,) = r["crowded"]
    assert d["refused"] and "alone puts 3 values at acme.example.net" in d["reason"]
    assert "give each name its own label" in d["reason"]


def test_round_counts_values_by_record_without_an_owner():
    hv = {"web1": {"letsencrypt_request": request(["a", "b"], values=[value("a", "x.example.org"),
                                                                     value("b", "x.example.org")])}}
    r = pulse.build_round(hv, ["web1"], "adns", ["ns1"], now=NOW, max_values_per_name=1)
    assert [x["cert"] for x in r["records"]] == ["a"]
    assert [(d["cert"], d["owner"]) for d in r["crowded"]] == [("b", "_acme-challenge.x.example.org")]


@pytest.mark.parametrize("cap", [0, "seven", None])
def test_round_refuses_a_bad_cap(cap):
    with pytest.raises(ValueError, match="letsencrypt_max_values_per_name"):
        pulse.build_round({}, [], "adns", [], max_values_per_name=cap)


def test_round_collects_retired_values_of_every_host():
    retired = [{"record": "_acme-challenge.a.example.org", "value": "old"}, {"record": "x", "value": ""}]
    hv = {"web1": {"letsencrypt_request": request(acme_txt_retired=retired)},
          "web2": {"letsencrypt_request": request()}}
    r = round_(hv)
    assert r["retired"] == [{"host": "web1", "record": "_acme-challenge.a.example.org", "value": "old"}]
    assert r["records"] == [] and r["dns_hosts"] == []  # retired values alone start no publish


def test_cname_check_options_from_the_dns_hosts_variables():
    dns = {"letsencrypt_signing_zones": [{"origin": "acme.example.net", "method": "rfc2136"}, {"path": "x"}],
           "letsencrypt_cname_resolver": "127.0.0.1:5353"}

    def dns_var(name, default):
        return dns.get(name, default)

    assert pulse.cname_check(["ns1"], dns_var, True) == {
        "zones": ["acme.example.net"], "lookup": "authoritative", "nameserver_port": 53,
        "resolver": "127.0.0.1:5353"}
    assert pulse.cname_check(["ns1"], dns_var, "false") is None  # letsencrypt_request_cname_check off
    assert pulse.cname_check(["ns1", "ns2"], dns_var, True) is None  # no single DNS host
    assert pulse.cname_check(["ns1"], lambda name, default: default, True) is None  # no zones


def test_module_args_leave_an_empty_key_type_to_the_module():
    v = {"letsencrypt_cert_root": "/c", "letsencrypt_key_type": ""}
    assert "key_type" not in pulse.module_args("request", lambda n, d=None: v.get(n, d))
    v["letsencrypt_key_type"] = "rsa-2048"
    assert pulse.module_args("request", lambda n, d=None: v.get(n, d))["key_type"] == "rsa-2048"


# -- play 3's view -------------------------------------------------------------------------------

def test_host_view_does_not_finalize_deferred_certs_and_fails_refused_ones():
    r = {"id": "1", "records": [{"host": "web1"}], "dns_hosts": ["ns1"], "problem": "",
         "crowded": [{"host": "web1", "cert": "later", "refused": False, "reason": "deferred"},
                      {"host": "web1", "cert": "big", "refused": True, "reason": "not published: too many"},
                      {"host": "web2", "cert": "other", "refused": True, "reason": "x"}]}
    view = pulse.host_view("web1", r, {"pending": ["now", "later", "big"]}, {"published": 1})
    assert view["stop"] == "" and view["finalize"] == ["now"]
    assert pulse.unfinished(view, {}) == ["big: not published: too many"]

# -- play 3's view -------------------------------------------------------------------------------

def test_host_view_without_round_stops():
    assert "round of play 1 is missing" in pulse.host_view("web1", {}, {}, {})["stop"]


def test_host_view_stops_when_values_were_not_published():
    r = {"id": "1", "records": [{"host": "web1"}], "dns_hosts": ["ns1"], "problem": ""}
    assert "not published" in pulse.host_view("web1", r, {"pending": ["w"]}, {})["stop"]


def test_host_view_leaves_out_rejected_certs_and_reports_them():
    r = {"id": "1", "records": [{"host": "web1"}], "dns_hosts": ["ns1"], "problem": ""}
    publish = {"published": 1, "rejected": [{"host": "web1", "cert": "bad", "name": "b.example.org",
                                             "reason": "no CNAME", "fix": "add it"},
                                            {"host": "web2", "cert": "w2"}]}
    view = pulse.host_view("web1", r, {"pending": ["good", "bad"], "failed": True, "msg": "x"}, publish)
    assert view["stop"] == "" and view["finalize"] == ["good"]
    problems = pulse.unfinished(view, {"finalize_failure": "CA down"})
    assert problems == ["bad (b.example.org) not published: no CNAME; fix: add it", "acme_request: x",
                        "acme_finalize: CA down"]


def test_pulse_check():
    assert "no pulse round was built" in pulse.pulse_check(None, {})
    r = {"id": "r1", "finalize": ["web1"]}
    assert "play 3 ran no certbridge task on web1" in pulse.pulse_check(r, {"web1": None})
    assert "play 3 ran no" in pulse.pulse_check(r, {"web1": {"round": "older"}})
    assert pulse.pulse_check(r, {"web1": {"round": "r1"}}) == ""
    assert pulse.pulse_check({"id": "r1", "finalize": []}, {}) == ""


# -- options, names, checks ----------------------------------------------------------------------

def lookup(values):
    return lambda name, default=None: values.get(name, default)


def test_module_args_production_by_default_and_optional_options_left_out():
    args = pulse.module_args("request", lookup({"letsencrypt_certs": {"a": ["a.example.org"]},
                                                "letsencrypt_log_dir": "/var/log/certbridge",
                                                "letsencrypt_request_timeout": 60, "letsencrypt_ca_file": "",
                                                "letsencrypt_account_email": "hm@example.org"}))
    assert args["directory"] == pulse.LE_PRODUCTION and args["staging"] is False
    assert args["log_file"] == "/var/log/certbridge/certbridge.log"
    assert args["account_email"] == "hm@example.org" and "ca_file" not in args
    assert args["timeout"] == 60 and args["force"] is False and "dns_check" not in args


def test_module_args_staging_directory_and_gate_options():
    staging = pulse.module_args("finalize", lookup({"letsencrypt_use_staging": "true",
                                                    "letsencrypt_self_generate_tokens": True,
                                                    "letsencrypt_finalize_timeout": 300,
                                                    "letsencrypt_dns_check": "127.0.0.1:53"}))
    assert staging["directory"] == pulse.LE_STAGING and staging["staging"] is True
    assert staging["self_sign"] is True and staging["timeout"] == 300 and staging["dns_check"] == "127.0.0.1:53"
    own = pulse.module_args("acknowledge", lookup({"letsencrypt_directory": "https://ca.example/dir",
                                                   "letsencrypt_use_staging": True, "letsencrypt_dns_check": "x"}))
    assert own["directory"] == "https://ca.example/dir" and "dns_check" not in own


@pytest.mark.parametrize("given,expected", [("true", True), ("no", False), ("a, b", ["a", "b"]),
                                            (["a"], ["a"]), (False, False)])
def test_force_from_extra_vars(given, expected):
    assert pulse.force(given) == expected


def test_certcheck_entries_keep_ports_and_strip_wildcards():
    certs = {"a": ["Web01.example.org.", "web.example.org"], "b": ["mail.example.org:993"],
             "c": {"names": ["*.s3.example.org"]}, "empty": []}
    assert pulse.certcheck_entries(certs) == ["web01.example.org 443", "mail.example.org 993", "s3.example.org 443"]
    assert pulse.cert_dirs(certs) == ["web01.example.org", "mail.example.org", "s3.example.org"]


def test_certcheck_lines_name_a_group_cert_once():
    group = {"s3": {"names": ["s3.example.org", "*.s3.example.org"], "shared_by": "s3"}}
    hosts = [dict(group, own={"names": ["s3-1.example.org"]}), group, {}, dict(group, mail=["mail.example.org:993"])]
    assert pulse.certcheck_lines(hosts) == ["s3.example.org 443", "s3-1.example.org 443", "mail.example.org 993"]


def test_missing_handlers_by_name_or_listen_topic():
    entries = [{"name": "letsencrypt updated a", "include_tasks": "roles/x/handlers/touch_file.yaml"},
               {"name": "reload", "listen": ["letsencrypt updated b"]},
               {"name": "other", "listen": "letsencrypt updated c"},
               {"ansible.builtin.import_tasks": "more.yml"}, "junk"]
    known = pulse.handler_topics(entries)
    assert pulse.missing_handlers({"a": [], "b": [], "c": [], "d": []}, known) == ["letsencrypt updated d"]
    assert pulse.handler_imports(entries) == ["more.yml"]


def test_replaced_opendev_variables_say_what_replaces_them():
    (msg,) = pulse.replaced_variables({"letsencrypt_test_only": True, "letsencrypt_use_staging": True})
    assert "letsencrypt_use_staging" in msg and "letsencrypt_self_sign_only" in msg
    assert pulse.replaced_variables({"letsencrypt_self_generate_tokens": True}) == []


# -- partial runs ------------------------------------------------------------------------------

def test_the_command_to_run_adds_the_dns_host_to_the_limit_in_each_spelling():
    base = ["/venv/bin/ansible-playbook", "-i", "hosts.yaml", "pulse.yaml"]
    assert pulse.limit_command(base + ["--limit", "web01"], ["ns1"]) == \
        "ansible-playbook -i hosts.yaml pulse.yaml --limit web01,ns1"
    assert pulse.limit_command(base + ["-l", "web*:!web9"], ["ns1"]) == \
        "ansible-playbook -i hosts.yaml pulse.yaml -l 'web*:!web9,ns1'"
    assert pulse.limit_command(base + ["--limit=web01"], ["ns1", "ns2"]) == \
        "ansible-playbook -i hosts.yaml pulse.yaml --limit=web01,ns1,ns2"
    assert pulse.limit_command(base + ["-lweb01", "-e", "x=1 2"], ["ns1"]) == \
        "ansible-playbook -i hosts.yaml pulse.yaml -lweb01,ns1 -e 'x=1 2'"


def test_only_certs_that_would_order_count_as_unpublished():
    result = request(certs={"a": {"action": "issue", "reason": "missing"},
                            "b": {"action": "issue", "reason": "missing", "held": True},
                            "c": {"action": "ok", "reason": "valid"}})
    assert pulse.unpublished_orders(result) == ["a"]
    assert pulse.unpublished_orders(request()) == []


# -- handlers at fleet scale -----------------------------------------------------------------------

def test_the_common_topic_serves_every_cert_and_is_notified_once_per_host():
    known = ["letsencrypt updated", "letsencrypt updated a"]
    assert pulse.missing_handlers({"a": [], "b": []}, known) == []
    assert pulse.notifications(["a", "b"], known) == ["letsencrypt updated a", "letsencrypt updated"]
    assert pulse.notifications([], known) == []
    # Without it, each cert needs its own handler, as before.
    assert pulse.missing_handlers({"a": [], "b": []}, ["letsencrypt updated a"]) == ["letsencrypt updated b"]
    assert pulse.notifications(["a"], ["letsencrypt updated a"]) == ["letsencrypt updated a"]
