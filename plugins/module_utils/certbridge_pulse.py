# certbridge: the pulse's controller-side logic (round, option mapping, checks), free of Ansible objects.
"""What the ``letsencrypt_pulse`` action decides, as plain functions over plain data.

The action (plugins/action/letsencrypt_pulse.py) feeds these with hostvars, the role's variables
and module results; everything here is testable without a play (tests/python/).

The round is built once per pulse, on the controller, from what play 1 produced; it is stored on
``localhost`` and drives the later plays: play 2 publishes ``records`` on ``dns_hosts``, play 3
runs on ``finalize``; http-01 tokens go to ``http_hosts`` (each requesting host itself, or the
hosts its cert's ``webroot_hosts`` names) before play 3 and leave them once their orders
finished. Only hosts that completed play 1 in this run count, and each round has a
fresh id, so values of an earlier run or of an unreachable host can never be published.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import time

# Let's Encrypt's ACME directories: the one place the Python side names them.
LE_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LE_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

HANDLER_PREFIX = "letsencrypt updated "
# The fleet topic: notified once per host with any updated cert (the certs in the fact
# letsencrypt_updated_certs), so one handler serves every host in parallel under forks.
COMMON_TOPIC = "letsencrypt updated"
BOOLEANS_TRUE = frozenset(("y", "yes", "on", "1", "true", "t", "1.0"))
BOOLEANS_FALSE = frozenset(("n", "no", "off", "0", "false", "f", "0.0", ""))

# Module option <- role variable, sent only when the variable is set (not empty, not null).
OPTIONAL_ARGS = {
    "ca_file": "letsencrypt_ca_file",
    "account_email": "letsencrypt_account_email",
    "eab_kid": "letsencrypt_eab_kid",
    "eab_hmac_key": "letsencrypt_eab_hmac_key",
    "proxy": "letsencrypt_proxy",
    "profile": "letsencrypt_profile",
    "group": "letsencrypt_key_group",
}

# acme_finalize's http-01 pre-check <- role variable, sent only when it differs from the module's
# default: a dns-01 fleet's finalize gets exactly the options it got before http-01 existed.
HTTP_CHECK_ARGS = (
    ("http_check", "letsencrypt_http_check", True),
    ("http_check_port", "letsencrypt_http_check_port", 80),
    ("http_check_resolver", "letsencrypt_http_check_resolver", ""),
)
DNS_01, HTTP_01 = "dns-01", "http-01"

# OpenDev variables certbridge does not take as they are, with what replaces them. A host that
# sets one fails in play 1 with this text, before any order (never a silent production cert).
REPLACED_VARIABLES = {
    "letsencrypt_test_only": (
        "letsencrypt_test_only was split by OpenDev itself into letsencrypt_use_staging "
        "(Let's Encrypt's staging CA) and letsencrypt_self_sign_only (no CA, a local test CA "
        "signs); set those instead and remove letsencrypt_test_only"),
}


def truthy(value):
    """Ansible's truth for a variable that may arrive as a string from -e ("false" is false)."""
    if isinstance(value, str):
        return value.strip().lower() not in BOOLEANS_FALSE
    return bool(value)


def force(value):
    """letsencrypt_force: true/false, or cert names; -e gives strings ("true", "a,b")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in BOOLEANS_TRUE or text in BOOLEANS_FALSE:
            return text in BOOLEANS_TRUE
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


def plain(value):
    """A registered result or fact as a plain dict (or the value itself)."""
    return dict(value) if hasattr(value, "keys") else value


def spec_names(spec):
    """The names of one letsencrypt_certs entry as given (a list, or a dict with names)."""
    names = spec.get("names", []) if isinstance(spec, dict) else spec
    return list(names or [])


def normalise(name):
    """One name as acme_request normalises it: no ":port", lower case, no trailing dot."""
    return str(name).split(":")[0].strip().lower().rstrip(".")


def cert_names(spec):
    """The normalised, de-duplicated names of one letsencrypt_certs entry."""
    out = []
    for name in spec_names(spec):
        name = normalise(name)
        if name and name not in out:
            out.append(name)
    return out


def cert_dir(spec):
    """The directory name of one cert: its first name without "*." (None without names)."""
    names = cert_names(spec)
    if not names:
        return None
    return names[0][2:] if names[0].startswith("*.") else names[0]


def cert_challenge(spec, default=None):
    """The challenge of one letsencrypt_certs entry: its own, else the host's default, else dns-01
    (OpenDev's list form is always the host default)."""
    own = spec.get("challenge") if isinstance(spec, dict) else None
    return str(own or default or DNS_01)


def webroot_patterns(certs):
    """cert -> its ``webroot_hosts`` host pattern, for the certs that name one."""
    return {str(cert): str(spec["webroot_hosts"]) for cert, spec in (certs or {}).items()
            if isinstance(spec, dict) and spec.get("webroot_hosts") not in (None, "")}


def webroot_hosts_problems(certs, default_challenge, resolve):
    """Refusals of ``webroot_hosts`` before any order: only http-01 certs place tokens on other
    hosts, and the pattern must match at least one inventory host (``resolve(pattern)``)."""
    problems = []
    for cert, pattern in sorted(webroot_patterns(certs).items()):
        challenge = cert_challenge(certs[cert], default_challenge)
        if challenge != HTTP_01:
            problems.append("cert %s: webroot_hosts %r places http-01 tokens, but the cert's challenge is %s "
                            "(set challenge: http-01 or remove webroot_hosts)" % (cert, pattern, challenge))
        elif not resolve(pattern):
            problems.append("cert %s: webroot_hosts %r matches no inventory host: name the group (or host "
                            "pattern) of the web servers that serve its names' /.well-known/acme-challenge/"
                            % (cert, pattern))
    return problems


def cert_dirs(certs):
    """Directory names of the declared certs."""
    return [d for d in (cert_dir(spec) for spec in (certs or {}).values()) if d]


def certcheck_entries(certs):
    """OpenDev's certcheck lines: "<first name> <port>" per cert, port 443 unless given."""
    out = []
    for spec in (certs or {}).values():
        names = spec_names(spec)
        if not names:
            continue
        _, _, port = str(names[0]).partition(":")
        out.append("%s %s" % (cert_dir(spec), port.strip() or "443"))
    return out


def certcheck_lines(certs_of_hosts):
    """certcheck_entries of several hosts, each line once: a group cert (shared_by) is
    declared by every member, but certcheck checks its first name once."""
    out = []
    for certs in certs_of_hosts:
        out.extend(line for line in certcheck_entries(certs) if line not in out)
    return out


def module_args(step, var):
    """acme_request's (step request) or acme_finalize's options from the role's variables.

    ``var(name, default=None)`` looks a variable up. Returns only options that are set."""
    staging = truthy(var("letsencrypt_use_staging", False))
    args = {
        "certs": var("letsencrypt_certs", {}),
        "directory": var("letsencrypt_directory")
        or (var("letsencrypt_staging_directory", LE_STAGING) if staging
            else var("letsencrypt_production_directory", LE_PRODUCTION)),
        "staging": staging,
        "cert_root": var("letsencrypt_cert_root"),
        # Empty: the module keeps each certificate's key type.
        "key_type": var("letsencrypt_key_type") or None,
        "self_sign": truthy(var("letsencrypt_self_sign_only", False))
        or truthy(var("letsencrypt_self_generate_tokens", False)),
        "log_file": posixpath.join(str(var("letsencrypt_log_dir")), "certbridge.log")
        if var("letsencrypt_log_dir") else None,
        "request_timeout": var("letsencrypt_http_timeout"),
    }
    for option, name in OPTIONAL_ARGS.items():
        if var(name) not in (None, ""):
            args[option] = var(name)
    if step == "request":
        # The host's default challenge (a cert's own `challenge`/`webroot` in certs wins).
        if var("letsencrypt_challenge") not in (None, "", DNS_01):
            args["challenge"] = var("letsencrypt_challenge")
        if var("letsencrypt_webroot") not in (None, ""):
            args["webroot"] = var("letsencrypt_webroot")
        args["timeout"] = var("letsencrypt_request_timeout")
        args["ari_interval"] = var("letsencrypt_ari_interval")
        args["force"] = force(var("letsencrypt_force", False))
        if var("letsencrypt_renew_days") is not None:
            args["renew_days"] = var("letsencrypt_renew_days")
        if var("letsencrypt_metrics_file"):
            args["metrics_file"] = var("letsencrypt_metrics_file")
    else:
        args["timeout"] = var("letsencrypt_finalize_timeout")
        if step == "finalize" and var("letsencrypt_dns_check"):
            args["dns_check"] = var("letsencrypt_dns_check")
        if step == "finalize":
            for option, name, default in HTTP_CHECK_ARGS:
                value = var(name, default)
                if option == "http_check":
                    value = truthy(value)
                elif option == "http_check_port" and str(value).isdigit():
                    value = int(value)
                if value is not None and value != default:
                    args[option] = value
    return {k: v for k, v in args.items() if v is not None}


def replaced_variables(defined):
    """Messages for the OpenDev variables among ``defined`` that certbridge replaced."""
    return [REPLACED_VARIABLES[name] for name in sorted(REPLACED_VARIABLES) if name in defined]


def handler_topics(entries):
    """Names and listen topics of a handlers list (a parsed YAML handlers file)."""
    known = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        for topic in [entry.get("name")] + _as_list(entry.get("listen")):
            if topic and str(topic) not in known:
                known.append(str(topic))
    return known


def handler_imports(entries):
    """Files a handlers list imports (import_tasks / include_tasks entries without a name of
    their own that could be notified are followed by the caller)."""
    out = []
    for entry in entries or []:
        if isinstance(entry, dict):
            for key in ("import_tasks", "ansible.builtin.import_tasks"):
                if isinstance(entry.get(key), str):
                    out.append(entry[key])
    return out


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def missing_handlers(certs, known):
    """Handler names ("letsencrypt updated <cert>") of certs with neither a handler nor a
    listen topic of that name; none when the common topic has a handler (it serves them all)."""
    known = set(known)
    if COMMON_TOPIC in known:
        return []
    return [HANDLER_PREFIX + str(cert) for cert in (certs or {}) if HANDLER_PREFIX + str(cert) not in known]


def notifications(updated, known):
    """What a host with ``updated`` certs notifies: each cert's own handler where the play has
    one, then the common topic where it has one."""
    known = set(known)
    out = [HANDLER_PREFIX + str(c) for c in updated if HANDLER_PREFIX + str(c) in known]
    if updated and COMMON_TOPIC in known:
        out.append(COMMON_TOPIC)
    return out


def _get(hostvars_of_host, name, default=None):
    try:
        if name in hostvars_of_host:
            return hostvars_of_host[name]
    except Exception:  # an undefined or unrenderable value counts as unset
        return default
    return default


def request_failed(result):
    """Whether play 1's step failed on a host (the task itself never fails for a CA error)."""
    return bool(result.get("failed") or result.get("request_failed"))


def backoff_without_certificate(host, result, now):
    """Warnings for certs in backoff that hold no valid certificate: named at every pulse."""
    out = []
    for cert, decision in sorted((result.get("certs") or {}).items()):
        if not isinstance(decision, dict) or decision.get("reason") != "backoff":
            continue
        not_after = decision.get("not_after")
        if not_after is not None and not_after > now:
            continue
        retry = decision.get("retry_not_before")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(retry)) if retry else "unknown"
        held = "no certificate" if not_after is None else "an expired certificate"
        out.append("%s: certificate %s holds %s and is in backoff after a CA failure; next try "
                   "at %s (letsencrypt_force=%s retries now)" % (host, cert, held, when, cert))
    return out


def cname_check(dns_group_hosts, dns_var, enabled):
    """acme_request's `cname_check`, from the DNS host's signing zones: play 1 runs before the
    DNS host's role, so its inventory variables are read through hostvars.

    ``dns_group_hosts`` is what letsencrypt_dns_group matches; ``dns_var(name, default)`` reads
    a variable of that host. None (no check) when there is no single DNS host, it names no
    zones, or ``enabled`` (letsencrypt_request_cname_check) is off."""
    if not truthy(enabled) or len(dns_group_hosts) != 1:
        return None
    zones = [str(z.get("origin")) for z in dns_var("letsencrypt_signing_zones", []) or []
             if hasattr(z, "get") and z.get("origin")]
    if not zones:
        return None
    check = {
        "zones": zones,
        "lookup": dns_var("letsencrypt_cname_check", "authoritative") or "authoritative",
        "nameserver_port": dns_var("letsencrypt_dns_nameserver_port", 53),
    }
    for option, name in (("resolver", "letsencrypt_cname_resolver"), ("alias", "letsencrypt_challenge_alias")):
        if dns_var(name, ""):
            check[option] = dns_var(name, "")
    return check


def retired_of(host, result):
    """The values of `host`'s finished orders (acme_request's acme_txt_retired): the next
    publish removes them whatever their age."""
    return [{"host": host, "record": str(r.get("record")), "value": str(r.get("value"))}
            for r in result.get("acme_txt_retired") or [] if hasattr(r, "get") and r.get("value")]


def values_cap(max_values_per_name):
    """letsencrypt_max_values_per_name as a whole number of at least 1 (ValueError otherwise)."""
    try:
        cap = int(max_values_per_name)
    except (TypeError, ValueError):
        raise ValueError("letsencrypt_max_values_per_name must be a whole number, not %r"
                         % (max_values_per_name,))
    if cap < 1:
        raise ValueError("letsencrypt_max_values_per_name must be at least 1, not %d" % cap)
    return cap


def defer_crowded(records, cap):
    """Keeps at most `cap` values per owner (acme_request's `owner`, else the challenge
    record): certs are taken whole, by host and cert name; a cert that does not fit is deferred
    to the next pulse (its order is kept), one that can never fit (more values at one owner
    than `cap` alone) is refused with the fix. Returns (records kept, deferred entries)."""
    by_cert = {}
    for r in records:
        by_cert.setdefault((str(r.get("host")), str(r.get("cert"))), []).append(r)
    kept, deferred, carried = [], [], {}
    for (host, cert), recs in sorted(by_cert.items()):
        need = {}
        for r in recs:
            owner = str(r.get("owner") or r.get("record"))
            need[owner] = need.get(owner, 0) + 1
        alone = sorted(o for o, n in need.items() if n > cap)
        full = sorted(o for o, n in need.items() if carried.get(o, 0) + n > cap)
        if alone:
            deferred.append({
                "host": host, "cert": cert, "owner": alone[0], "refused": True,
                "reason": "not published: this cert alone puts %d values at %s, more than "
                "letsencrypt_max_values_per_name (%d); give each name its own label "
                "(_acme-challenge.<name> CNAME <name>.<signing zone>)" % (need[alone[0]], alone[0], cap),
            })
        elif full:
            deferred.append({
                "host": host, "cert": cert, "owner": full[0], "refused": False,
                "reason": "deferred to the next pulse: %s already gets %d values in this pulse "
                "(letsencrypt_max_values_per_name %d); per-name labels avoid the wait"
                % (full[0], carried.get(full[0], 0), cap),
            })
        else:
            for owner, n in need.items():
                carried[owner] = carried.get(owner, 0) + n
            kept.extend(recs)
    return kept, deferred


def limit_command(argv, extra_hosts):
    """The ansible-playbook command line ``argv`` with ``extra_hosts`` added to its --limit (or
    -l), quoted for a shell: what to run so the limit takes in the DNS host."""
    import shlex

    out, i, added = [], 0, False
    argv = [str(a) for a in argv]
    while i < len(argv):
        arg = argv[i]
        if arg in ("--limit", "-l") and i + 1 < len(argv):
            out.extend([arg, ",".join([argv[i + 1]] + list(extra_hosts))])
            i, added = i + 2, True
            continue
        for prefix in ("--limit=", "-l"):
            if arg.startswith(prefix) and len(arg) > len(prefix) and not added:
                out.append(prefix + ",".join([arg[len(prefix):]] + list(extra_hosts)))
                added = True
                break
        else:
            out.append(arg)
        i += 1
    if argv and os.path.basename(argv[0]).startswith("ansible-playbook"):
        out[0] = "ansible-playbook"
    return shlex.join(out)


def unpublished_orders(result):
    """Certs a check-mode acme_request would order or finish with dns-01 values (not held)."""
    return sorted(str(c) for c, d in (result.get("certs") or {}).items()
                  if isinstance(d, dict) and d.get("action") == "issue" and not d.get("held"))


def http_tokens_of(host, result, targets, served_webroots=None):
    """`host`'s http-01 tokens (acme_request's acme_http_required) by the host that serves them:
    ``targets`` maps a cert to the hosts its webroot_hosts matches; other certs' tokens go to
    `host` itself. Another host writes under its own webroot when ``served_webroots`` names
    one (its letsencrypt_webroot), else under the cert's. Returns [(target, token)], each
    token naming its requesting host."""
    out = []
    for item in result.get("acme_http_required") or []:
        if not hasattr(item, "get") or not item.get("token"):
            continue
        token = dict(item)
        token["host"] = host
        for target in (targets or {}).get(str(token.get("cert"))) or [host]:
            target = str(target)
            own = (served_webroots or {}).get(target) if target != host else None
            out.append((target, dict(token, webroot=own) if own else token))
    return out


def http_retired(round_, target, done):
    """The tokens this pulse placed on `target` whose orders finished: ``done`` maps a requesting
    host to its acme_finalize acme_http_done ([{token, webroot}]). acme_http_publish's
    `retired` for `target` (removed whatever their age), under the webroot `target` wrote them
    to (its own, with webroot_hosts)."""
    finished = {(str(host), str(d.get("token")))
                for host, items in (done or {}).items() for d in items or [] if hasattr(d, "get")}
    out = []
    for token in ((round_ or {}).get("http_tokens") or {}).get(target) or []:
        key = (str(token.get("host")), str(token.get("token")))
        entry = {"token": key[1], "webroot": str(token.get("webroot"))}
        if key in finished and entry not in out:
            out.append(entry)
    return out


def build_round(hostvars, play_hosts, dns_group, dns_hosts, extra_vars=(), now=None,
                max_values_per_name=7, webroot_targets=None, served_webroots=None):
    """Summarise play 1: records to publish, hosts to finalize, the DNS host, warnings.

    ``hostvars`` maps host -> its variables (letsencrypt_request is play 1's result);
    ``dns_hosts`` is what ``letsencrypt_dns_group`` (a group or a host pattern) matches;
    ``webroot_targets`` maps host -> cert -> the hosts its ``webroot_hosts`` pattern matches
    (resolved by the caller: this stays a function of its arguments); ``served_webroots`` maps
    such a host to the letsencrypt_webroot its inventory sets (it writes there)."""
    if not isinstance(play_hosts, (list, tuple)):
        raise ValueError("play_hosts must be a list of host names")
    cap = values_cap(max_values_per_name)
    now = int(time.time()) if now is None else now
    records, retired, finalize, warnings = [], [], [], []
    http_tokens, http_planned = {}, {}
    failed, decisions = {}, {}
    forced_in_inventory = []
    for host in play_hosts:
        hv = hostvars[host]
        result = plain(_get(hv, "letsencrypt_request", None))
        if not isinstance(result, dict) or result.get("unreachable"):
            continue
        if request_failed(result):
            failed[host] = str(result.get("msg", "acme_request failed"))
        warnings.extend(backoff_without_certificate(host, result, now))
        declared = _get(hv, "letsencrypt_certs", {}) or {}
        for cert, decision in (result.get("certs") or {}).items():
            if isinstance(decision, dict) and decision.get("action", "ok") != "ok":
                decisions.setdefault(host, {})[cert] = "%s (%s)" % (decision.get("action"), decision.get("reason"))
                if cert_challenge(declared.get(cert) if hasattr(declared, "get") else None,
                                  _get(hv, "letsencrypt_challenge")) == HTTP_01:
                    http_planned.setdefault(host, {})[cert] = list(
                        ((webroot_targets or {}).get(host) or {}).get(cert) or [host])
        pending = list(result.get("pending") or [])
        unacked = list(result.get("unacked") or [])
        if truthy(_get(hv, "letsencrypt_force", False)) and "letsencrypt_force" not in extra_vars:
            forced_in_inventory.append(host)
        if truthy(_get(hv, "letsencrypt_self_generate_tokens", False)):
            certs = _get(hv, "letsencrypt_certs", {}) or {}
            for cert in pending:
                # Self-generated values are dns-01 only: an http-01 cert is signed by the test CA
                # with nothing to publish.
                if cert_challenge(certs.get(cert, []), _get(hv, "letsencrypt_challenge")) == HTTP_01:
                    continue
                for name in cert_names(certs.get(cert, [])):
                    records.append({
                        "host": host,
                        "cert": cert,
                        "name": name,
                        "record": "_acme-challenge." + (name[2:] if name.startswith("*.") else name),
                        "value": secrets.token_urlsafe(32),
                    })
        else:
            for value in result.get("acme_txt_required") or []:
                record = dict(value)
                record["host"] = host
                records.append(record)
        for target, token in http_tokens_of(host, result, (webroot_targets or {}).get(host), served_webroots):
            http_tokens.setdefault(target, []).append(token)
        retired.extend(retired_of(host, result))
        if pending or unacked or host in failed or truthy(_get(hv, "letsencrypt_prune", False)):
            finalize.append(host)
    records, crowded = defer_crowded(records, cap)
    warnings.extend("%s cert %s: %s" % (d["host"], d["cert"], d["reason"]) for d in crowded)
    if forced_in_inventory:
        warnings.append(
            "letsencrypt_force is set in the inventory for %s: every pulse reissues these "
            "certificates. Pass it once with -e instead." % ", ".join(sorted(forced_in_inventory)))
    dns_hosts = list(dns_hosts or [])
    problem = ""
    if records and len(dns_hosts) != 1:
        problem = (
            "letsencrypt_dns_group %r must match exactly one host (the DNS primary that "
            "publishes the dns-01 values); it matches %d: %s"
            % (dns_group, len(dns_hosts), ", ".join(dns_hosts) or "none"))
    return {
        "id": "%d-%s" % (time.time_ns(), secrets.token_hex(4)),
        "hosts": list(play_hosts),
        "records": records,
        # Values of finished orders, removed at this pulse's publish (if it publishes).
        "retired": retired,
        "finalize": finalize,
        # Per host, the certs acme_request decided to (re)issue, with the reason.
        "decisions": decisions,
        # Certs kept out of this pulse for the number of values at one owner (not finalized).
        "crowded": crowded,
        "failed": failed,
        "dns_group": dns_group,
        # Play 2 runs only when there is something to publish: a no-op pulse skips it entirely.
        "dns_hosts": dns_hosts if records and len(dns_hosts) == 1 else [],
        "problem": problem,
        "warnings": warnings,
        # http-01: target host -> the tokens it serves (each names its requesting host). The
        # publish play runs on http_hosts only, so a pulse without http-01 work has no such play.
        "http_tokens": http_tokens,
        "http_hosts": list(http_tokens),
        # Targets serving another host's tokens: after play 3 they remove the finished ones
        # (a host serving only its own tokens removes them in play 3's finalize step).
        # Per host, its http-01 certs acme_request decided to (re)issue -> the hosts that would
        # serve their tokens (check mode orders nothing, so this is what it can say).
        "http_planned": http_planned,
        "http_cleanup_hosts": [t for t, tokens in http_tokens.items() if any(x["host"] != t for x in tokens)],
    }


def http_unwritten(me, round_, http_publish):
    """`me`'s http-01 tokens that no publish wrote, and those a publish rejected.

    ``http_publish`` maps each target of the round to its letsencrypt_http_publish (None: the
    publish play did not run there - --limit, unreachable, failed). A cert missing a token on
    any of its targets is not finalized: the CA may ask exactly that host."""
    unwritten, rejected = [], []
    for target, tokens in ((round_ or {}).get("http_tokens") or {}).items():
        mine = [t for t in tokens if t.get("host") == me]
        if not mine:
            continue
        result = plain((http_publish or {}).get(target))
        if not isinstance(result, dict) or "written" not in result:
            for token in mine:
                entry = {"cert": str(token.get("cert")), "name": str(token.get("name")), "target": target}
                if entry not in unwritten:
                    unwritten.append(entry)
            continue
        for r in result.get("rejected") or []:
            if r.get("host") == me:
                rejected.append(dict(r, target=target))
    return unwritten, rejected


def host_view(me, round_, request, publish, http_publish=None):
    """One host's part of the round for play 3: what to finalize, what was rejected, and why
    the round cannot go on here (``stop``)."""
    round_ = round_ or {}
    request = request or {}
    publish = publish or {}
    unwritten, http_rejected = http_unwritten(me, round_, http_publish)
    dns_hosts = list(round_.get("dns_hosts") or [])
    rejected = [dict(r) for r in publish.get("rejected") or [] if r.get("host") == me]
    rejected_certs = {str(r.get("cert")) for r in rejected}
    crowded = [dict(d) for d in (round_.get("crowded") or []) if d.get("host") == me]
    rejected_certs.update(str(d.get("cert")) for d in crowded)
    rejected.extend(http_rejected)
    rejected_certs.update(str(r.get("cert")) for r in http_rejected + unwritten)
    pending = [str(c) for c in request.get("pending") or []]
    stop = str(round_.get("problem") or "") if round_ else (
        "the pulse round of play 1 is missing: run the pulse playbook as a whole")
    has_records = any(r.get("host") == me for r in round_.get("records") or [])
    if not stop and has_records and "published" not in publish:
        stop = ("the dns-01 values of this host were not published: the publishing host %s did "
                "not run (was it left out by --limit?)" % ", ".join(dns_hosts))
    return {
        "stop": stop,
        "finalize": [c for c in pending if c not in rejected_certs],
        "unacked": [str(c) for c in request.get("unacked") or []],
        "rejected": rejected,
        "refused": [d for d in crowded if d.get("refused")],
        "unwritten": unwritten,
        "request_failure": str(request.get("msg") or "acme_request failed") if request_failed(request) else "",
    }


def unfinished(view, finalized):
    """What play 3 must fail a host for: rejected values, play 1's and play 3's CA errors."""
    problems = ["%s (%s) not published%s: %s%s" % (
        r.get("cert"), r.get("name"), " on " + str(r["target"]) if r.get("target") else "", r.get("reason"),
        "; fix: %s" % r["fix"] if r.get("fix") else "") for r in view["rejected"]]
    problems.extend("%s (%s): its http-01 token was not written on %s (the publish play did not run there: "
                    "left out by --limit, unreachable or failed), so the CA was not asked"
                    % (u["cert"], u["name"], u["target"]) for u in view.get("unwritten") or [])
    problems.extend("%s: %s" % (d.get("cert"), d.get("reason")) for d in view.get("refused") or [])
    if view["request_failure"]:
        problems.append("acme_request: " + view["request_failure"])
    if finalized.get("finalize_failure"):
        problems.append("acme_finalize: " + str(finalized["finalize_failure"]))
    if finalized.get("http_cleanup_failure"):
        problems.append("acme_http_publish (removing finished tokens): " + str(finalized["http_cleanup_failure"]))
    return problems


def pulse_check(round_, finalize_results):
    """The last play's check: play 1 and play 3 ran certbridge's steps. Returns the problem or "".

    ``finalize_results`` maps each host of round_["finalize"] to its registered
    letsencrypt_finalize (None when play 3 registered nothing there)."""
    if not round_:
        return ("no pulse round was built: every host failed in play 1, or play 1 ran no certbridge "
                "task (is another role named letsencrypt-request-certs found first, e.g. in a roles/ "
                "directory next to your playbook?)")
    hosts = list(round_.get("finalize") or [])
    ran = [h for h in hosts if isinstance(finalize_results.get(h), dict)
           and (finalize_results[h].get("round") == round_.get("id") or finalize_results[h].get("unreachable"))]
    if hosts and not ran:
        return ("play 3 ran no certbridge task on %s: is another role named letsencrypt-create-certs "
                "found first (a roles/ directory next to your playbook)?" % ", ".join(hosts))
    return ""
