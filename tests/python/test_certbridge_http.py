# certbridge: unit tests of the pulse's http-01 side (plugins/module_utils/certbridge_pulse.py,
# plugins/filter/letsencrypt_http.py).
"""Where the round sends each http-01 token (the requesting host, a webroot_hosts pattern), that
a pulse runs only the publish step its challenges need, the option mapping of the new
variables, the refusals of webroot_hosts, play 3's view of unwritten or rejected tokens, and
which finished tokens each host removes."""

import importlib.util
from pathlib import Path

import certbridge_pulse as pulse

NOW = 1_800_000_000
ROOT = Path(__file__).resolve().parents[2]


def request(pending=(), values=(), tokens=(), certs=None, **extra):
    """A play-1 result as acme_request returns it (dns-01 values, http-01 tokens)."""
    out = {"pending": list(pending), "unacked": [], "certs": certs or {},
           "acme_txt_required": [dict(v) for v in values],
           "acme_http_required": [dict(t) for t in tokens], "changed": bool(pending)}
    out.update(extra)
    return out


def value(cert, name):
    return {"cert": cert, "name": name, "record": "_acme-challenge." + name, "value": "v-" + name}


def token(cert, name, webroot="/var/www/acme"):
    return {"cert": cert, "name": name, "token": "t-" + name, "key_authorization": "t-%s.thumb" % name,
            "webroot": webroot}


def round_(hostvars, dns_hosts=("ns1",), webroot_targets=None):
    return pulse.build_round(hostvars, list(hostvars), "adns", list(dns_hosts), (), now=NOW,
                             webroot_targets=webroot_targets)


def lookup(values):
    return lambda name, default=None: values.get(name, default)


# -- the round -----------------------------------------------------------------------------------

def test_tokens_go_to_the_requesting_host_and_the_pulse_runs_no_dns_publish():
    hv = {"web1": {"letsencrypt_request": request(["site"], tokens=[token("site", "a.example.org"),
                                                                    token("site", "b.example.org")])},
          "web2": {"letsencrypt_request": request()}}
    r = round_(hv)
    assert r["http_hosts"] == ["web1"]
    assert [(t["host"], t["name"], t["token"]) for t in r["http_tokens"]["web1"]] == [
        ("web1", "a.example.org", "t-a.example.org"), ("web1", "b.example.org", "t-b.example.org")]
    # Only http-01 work: no dns-01 publish play, no cleanup play (web1 removes its own in play 3).
    assert r["records"] == [] and r["dns_hosts"] == [] and r["problem"] == ""
    assert r["http_cleanup_hosts"] == [] and r["finalize"] == ["web1"]


def test_webroot_hosts_sends_each_token_to_every_matched_host():
    hv = {"lb-cert": {"letsencrypt_request": request(["www"], tokens=[token("www", "www.example.org")])}}
    r = round_(hv, webroot_targets={"lb-cert": {"www": ["be1", "be2"]}})
    assert r["http_hosts"] == ["be1", "be2"]
    for backend in ("be1", "be2"):
        assert [(t["host"], t["cert"], t["token"]) for t in r["http_tokens"][backend]] == [
            ("lb-cert", "www", "t-www.example.org")]
    # The backends serve another host's tokens: the cleanup play runs on them, not on lb-cert.
    assert r["http_cleanup_hosts"] == ["be1", "be2"] and "lb-cert" not in r["http_tokens"]
    assert r["finalize"] == ["lb-cert"]


def test_webroot_hosts_applies_to_its_cert_only():
    hv = {"web1": {"letsencrypt_request": request(["lb", "own"], tokens=[token("lb", "lb.example.org"),
                                                                         token("own", "own.example.org")])}}
    r = round_(hv, webroot_targets={"web1": {"lb": ["be1", "web1"]}})
    assert {h: [t["cert"] for t in ts] for h, ts in r["http_tokens"].items()} == {
        "be1": ["lb"], "web1": ["lb", "own"]}
    assert r["http_cleanup_hosts"] == ["be1"]


def test_a_host_with_a_dns_and_an_http_cert_gets_both_publish_steps():
    hv = {"web1": {"letsencrypt_request": request(["mail", "site"], values=[value("mail", "mail.example.org")],
                                                  tokens=[token("site", "www.example.org")])}}
    r = round_(hv)
    assert [(x["host"], x["cert"]) for x in r["records"]] == [("web1", "mail")] and r["dns_hosts"] == ["ns1"]
    assert r["http_hosts"] == ["web1"] and [t["cert"] for t in r["http_tokens"]["web1"]] == ["site"]
    assert r["finalize"] == ["web1"]


def test_a_dns_only_pulse_has_no_http_hosts():
    hv = {"web1": {"letsencrypt_request": request(["mail"], values=[value("mail", "mail.example.org")])},
          "web2": {"letsencrypt_request": request()}}
    r = round_(hv)
    assert r["dns_hosts"] == ["ns1"]
    assert r["http_tokens"] == {} and r["http_hosts"] == [] and r["http_cleanup_hosts"] == []


def test_http_only_work_needs_no_dns_host():
    # No letsencrypt_dns_group host at all is no problem when nothing is published in DNS.
    hv = {"web1": {"letsencrypt_request": request(["site"], tokens=[token("site", "www.example.org")])}}
    r = round_(hv, dns_hosts=())
    assert r["problem"] == "" and r["http_hosts"] == ["web1"]


def test_self_generated_tokens_stay_dns_01_only():
    hv = {"gate": {"letsencrypt_request": request(["dns", "web", "ip"]), "letsencrypt_self_generate_tokens": True,
                   "letsencrypt_certs": {"dns": ["d.example.org"],
                                         "web": {"names": ["w.example.org"], "challenge": "http-01",
                                                 "webroot": "/var/www/acme"},
                                         "ip": ["192.0.2.10"]},
                   "letsencrypt_challenge": "dns-01"}}
    r = round_(hv)
    assert sorted(x["cert"] for x in r["records"]) == ["dns", "ip"]
    assert r["http_hosts"] == []
    # The host default counts too.
    hv["gate"]["letsencrypt_challenge"] = "http-01"
    assert [x["cert"] for x in round_(hv)["records"]] == []


def test_check_mode_says_where_http_tokens_would_go():
    hv = {"web1": {"letsencrypt_request": request(certs={"site": {"action": "issue", "reason": "missing"},
                                                         "mail": {"action": "issue", "reason": "due"}}),
                   "letsencrypt_certs": {"site": {"names": ["www.example.org"], "challenge": "http-01",
                                                  "webroot_hosts": "backends"},
                                         "mail": ["mail.example.org"]}}}
    r = round_(hv, webroot_targets={"web1": {"site": ["be1", "be2"]}})
    assert r["http_planned"] == {"web1": {"site": ["be1", "be2"]}}
    assert r["http_hosts"] == [] and r["finalize"] == []


# -- option mapping ------------------------------------------------------------------------------

def test_request_gets_the_host_challenge_and_webroot():
    args = pulse.module_args("request", lookup({"letsencrypt_challenge": "http-01",
                                                "letsencrypt_webroot": "/var/www/acme",
                                                "letsencrypt_http_check": False}))
    assert args["challenge"] == "http-01" and args["webroot"] == "/var/www/acme"
    assert "http_check" not in args


def test_the_dns_01_default_sends_no_new_option():
    # A dns-01 fleet's modules get exactly the options they got before http-01 existed.
    values = {"letsencrypt_challenge": "dns-01", "letsencrypt_webroot": "", "letsencrypt_http_check": True,
              "letsencrypt_http_check_port": 80, "letsencrypt_http_check_resolver": ""}
    for step in ("request", "finalize", "acknowledge"):
        args = pulse.module_args(step, lookup(values))
        assert not {"challenge", "webroot", "http_check", "http_check_port", "http_check_resolver"} & set(args)


def test_finalize_gets_the_http_check_options():
    args = pulse.module_args("finalize", lookup({"letsencrypt_http_check": "false", "letsencrypt_http_check_port": "5002",
                                                 "letsencrypt_http_check_resolver": "127.0.0.1:5353",
                                                 "letsencrypt_challenge": "http-01"}))
    assert (args["http_check"], args["http_check_port"], args["http_check_resolver"]) == (False, 5002, "127.0.0.1:5353")
    assert "challenge" not in args
    assert "http_check" not in pulse.module_args("acknowledge", lookup({"letsencrypt_http_check": False}))


def test_per_cert_options_reach_the_module_unchanged():
    certs = {"site": {"names": ["www.example.org"], "challenge": "http-01", "webroot": "/srv/www",
                      "webroot_hosts": "backends"}, "old": ["old.example.org"]}
    assert pulse.module_args("request", lookup({"letsencrypt_certs": certs}))["certs"] == certs


# -- refusals before any order -------------------------------------------------------------------

def test_webroot_hosts_is_refused_on_a_dns_01_cert_and_when_it_matches_nothing():
    certs = {"dns": {"names": ["d.example.org"], "webroot_hosts": "backends"},
             "none": {"names": ["n.example.org"], "challenge": "http-01", "webroot_hosts": "nobody"},
             "good": {"names": ["g.example.org"], "challenge": "http-01", "webroot_hosts": "backends"},
             "plain": ["p.example.org"]}
    problems = pulse.webroot_hosts_problems(certs, None, lambda p: ["be1"] if p == "backends" else [])
    assert len(problems) == 2
    assert "cert dns: webroot_hosts 'backends'" in problems[0] and "dns-01" in problems[0]
    assert "cert none: webroot_hosts 'nobody' matches no inventory host" in problems[1]
    # With http-01 as the host default, the first cert is fine.
    assert len(pulse.webroot_hosts_problems(certs, "http-01", lambda p: ["be1"] if p == "backends" else [])) == 1


# -- play 3 --------------------------------------------------------------------------------------

def _lb_round():
    hv = {"web1": {"letsencrypt_request": request(["lb", "own"], tokens=[token("lb", "lb.example.org"),
                                                                         token("own", "own.example.org")])}}
    return round_(hv, webroot_targets={"web1": {"lb": ["be1", "be2"]}}), hv["web1"]["letsencrypt_request"]


def test_a_cert_whose_token_one_backend_did_not_write_is_not_finalized():
    r, req = _lb_round()
    written = {"written": ["t"], "removed": [], "rejected": []}
    view = pulse.host_view("web1", r, req, {}, {"be1": written, "be2": None, "web1": written})
    assert view["stop"] == "" and view["finalize"] == ["own"]
    problems = pulse.unfinished(view, {})
    assert problems == ["lb (lb.example.org): its http-01 token was not written on be2 (the publish play did not "
                        "run there: left out by --limit, unreachable or failed), so the CA was not asked"]


def test_a_rejected_token_is_reported_with_its_host_and_no_empty_fix():
    r, req = _lb_round()
    written = {"written": ["t"], "removed": [], "rejected": []}
    rejected = {"written": [], "removed": [], "rejected": [
        {"token": "t-own.example.org", "cert": "own", "name": "own.example.org", "host": "web1",
         "reason": "webroot /srv/www is a symlink"}]}
    view = pulse.host_view("web1", r, req, {}, {"be1": written, "be2": written, "web1": rejected})
    assert view["finalize"] == ["lb"]
    assert pulse.unfinished(view, {}) == [
        "own (own.example.org) not published on web1: webroot /srv/www is a symlink"]


def test_every_token_written_finalizes_everything():
    r, req = _lb_round()
    written = {"written": ["t"], "removed": [], "rejected": []}
    view = pulse.host_view("web1", r, req, {}, {"be1": written, "be2": written, "web1": written})
    assert view["finalize"] == ["lb", "own"] and pulse.unfinished(view, {}) == []


# -- removing finished tokens --------------------------------------------------------------------

def test_finished_tokens_are_retired_on_the_hosts_that_served_them():
    r, _ = _lb_round()
    done = {"web1": [{"token": "t-lb.example.org", "webroot": "/var/www/acme"}]}
    entry = [{"token": "t-lb.example.org", "webroot": "/var/www/acme"}]
    assert pulse.http_retired(r, "be1", done) == entry and pulse.http_retired(r, "be2", done) == entry
    # web1 also served the lb token? No: only "own", whose order did not finish.
    assert pulse.http_retired(r, "web1", done) == []
    # Another host's finished order with the same token text is not this host's.
    assert pulse.http_retired(r, "be1", {"web9": done["web1"]}) == []
    assert pulse.http_retired({}, "be1", done) == [] and pulse.http_retired(r, "be1", None) == []


def test_the_cleanup_filter_reads_play_3_results():
    spec = importlib.util.spec_from_file_location("letsencrypt_http", ROOT / "plugins" / "filter" / "letsencrypt_http.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    retired = module.FilterModule().filters()["letsencrypt_http_retired"]
    r, _ = _lb_round()
    hostvars = {"localhost": {"letsencrypt_round": r},
                "web1": {"letsencrypt_finalize": {"acme_http_done": [{"token": "t-lb.example.org",
                                                                      "webroot": "/var/www/acme"}]}}}
    assert retired(hostvars, "be2") == [{"token": "t-lb.example.org", "webroot": "/var/www/acme"}]
    # Play 3 registered nothing on web1 (it failed before): nothing is retired, nothing breaks.
    assert retired({"localhost": {"letsencrypt_round": r}, "web1": {}}, "be2") == []


def test_a_webroot_host_writes_under_its_own_webroot_and_retires_there():
    hv = {"app": {"letsencrypt_request": request(["www"], tokens=[token("www", "www.example.org", "/srv/app")])}}
    r = pulse.build_round(hv, ["app"], "adns", [], (), now=NOW, webroot_targets={"app": {"www": ["be1", "be2", "app"]}},
                          served_webroots={"be1": "/var/www/be1", "app": "/ignored"})
    assert {h: ts[0]["webroot"] for h, ts in r["http_tokens"].items()} == {
        "be1": "/var/www/be1", "be2": "/srv/app", "app": "/srv/app"}
    done = {"app": [{"token": "t-www.example.org", "webroot": "/srv/app"}]}
    assert pulse.http_retired(r, "be1", done) == [{"token": "t-www.example.org", "webroot": "/var/www/be1"}]
    assert pulse.http_retired(r, "be2", done) == [{"token": "t-www.example.org", "webroot": "/srv/app"}]
