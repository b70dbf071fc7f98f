# certbridge: the `letsencrypt_round` filter builds one pulse round from play 1's results.
"""Collect what play 1 of the pulse produced, once, on the controller.

The result is stored on `localhost` (set_fact with delegate_facts) and drives the later plays:
play 2 publishes `records` on `dns_hosts`, play 3 runs on `finalize`. Only hosts that completed
play 1 in this run count, and each round has a fresh id, so values of an earlier run or of an
unreachable host can never be published.
"""

from __future__ import annotations

import secrets
import time

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

display = Display()


def _get(hostvars_of_host, name, default=None):
    try:
        if name in hostvars_of_host:
            return hostvars_of_host[name]
    except Exception:  # an undefined or unrenderable value counts as unset
        return default
    return default


def _truthy(value):
    """Ansible's truth for a variable that may arrive as a string from -e ("false" is false)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "off", "0", "n", "f")
    return bool(value)


def _cert_names(spec):
    """The names of one letsencrypt_certs entry, as acme_request normalises them."""
    names = spec.get("names", []) if isinstance(spec, dict) else spec
    out = []
    for name in names or []:
        name = str(name).split(":")[0].strip().lower().rstrip(".")
        if name and name not in out:
            out.append(name)
    return out


def _extra_var_names():
    """Names given with -e, so a letsencrypt_force from inventory can be told apart."""
    try:
        from ansible.parsing.dataloader import DataLoader
        from ansible.utils.vars import load_extra_vars

        return set(load_extra_vars(DataLoader()).keys())
    except Exception:
        return set()


def _retired_of(host, result):
    """The values of `host`'s finished orders (acme_request's acme_txt_retired): the next
    publish removes them whatever their age."""
    return [{"host": host, "record": str(r.get("record")), "value": str(r.get("value"))}
            for r in result.get("acme_txt_retired") or [] if hasattr(r, "get") and r.get("value")]


def _defer_crowded(records, cap):
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


def letsencrypt_round(hostvars, play_hosts, dns_group, max_values_per_name=7):
    """Summarise play 1: records to publish, hosts to finalize, the DNS host."""
    if not isinstance(play_hosts, (list, tuple)):
        raise AnsibleFilterError("letsencrypt_round: play_hosts must be a list of host names")
    records = []
    retired = []
    finalize = []
    failed = {}
    forced_in_inventory = []
    extra_vars = _extra_var_names()
    groups = {}
    decisions = {}
    for host in play_hosts:
        hv = hostvars[host]
        if not groups:
            groups = _get(hv, "groups", {}) or {}
        result = _get(hv, "letsencrypt_request", None)
        if not isinstance(result, dict) or result.get("unreachable"):
            continue
        if result.get("failed"):
            failed[host] = str(result.get("msg", "acme_request failed"))
        for cert, decision in (result.get("certs") or {}).items():
            if isinstance(decision, dict) and decision.get("action", "ok") != "ok":
                decisions.setdefault(host, {})[cert] = "%s (%s)" % (decision.get("action"), decision.get("reason"))
        pending = list(result.get("pending") or [])
        unacked = list(result.get("unacked") or [])
        if _truthy(_get(hv, "letsencrypt_force", False)) and "letsencrypt_force" not in extra_vars:
            forced_in_inventory.append(host)
        if _truthy(_get(hv, "letsencrypt_self_generate_tokens", False)):
            certs = _get(hv, "letsencrypt_certs", {}) or {}
            for cert in pending:
                for name in _cert_names(certs.get(cert, [])):
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
        retired.extend(_retired_of(host, result))
        if pending or unacked or host in failed or _truthy(_get(hv, "letsencrypt_prune", False)):
            finalize.append(host)
    try:
        cap = int(max_values_per_name)
    except (TypeError, ValueError):
        raise AnsibleFilterError("letsencrypt_max_values_per_name must be a whole number, not %r"
                                 % (max_values_per_name,))
    if cap < 1:
        raise AnsibleFilterError("letsencrypt_max_values_per_name must be at least 1, not %d" % cap)
    records, deferred = _defer_crowded(records, cap)
    for d in deferred:
        display.warning("%s cert %s: %s" % (d["host"], d["cert"], d["reason"]))
    if forced_in_inventory:
        display.warning(
            "letsencrypt_force is set in the inventory for %s: every pulse reissues these "
            "certificates. Pass it once with -e instead." % ", ".join(sorted(forced_in_inventory))
        )
    dns_hosts = list(groups.get(dns_group, [])) if dns_group else []
    problem = ""
    if records and len(dns_hosts) != 1:
        problem = (
            "letsencrypt_dns_group %r must name an inventory group of exactly one host "
            "(the DNS primary that publishes the dns-01 values); it has %d: %s"
            % (dns_group, len(dns_hosts), ", ".join(dns_hosts) or "none")
        )
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
        "deferred": deferred,
        "failed": failed,
        "dns_group": dns_group,
        # Play 2 runs only when there is something to publish: a no-op pulse skips it entirely.
        "dns_hosts": dns_hosts if records and dns_hosts else [],
        "problem": problem,
    }


class FilterModule:
    """certbridge pulse filters."""

    def filters(self):
        return {"letsencrypt_round": letsencrypt_round}
