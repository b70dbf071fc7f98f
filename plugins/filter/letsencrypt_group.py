# certbridge: filters of group certificates (one cert shared by the members of an inventory group).
"""Group certificates in the pulse, decided once on the controller.

A cert declared ``{names: [...], shared_by: <group>}`` is the same certificate on every member
of the inventory group ``<group>`` that declares it. Per pulse and group cert:

- ``letsencrypt_group_problem`` (play 1, before any module runs): this host's declaration
  against the other members' (same names, key type, profile, self_sign; the group exists and
  holds the host); a message naming the culprit, or "".
- ``letsencrypt_group_plan`` (play 1, after every member reported what it holds): the issuer,
  the one member that may order. Rule: among the members that reported in this run, those
  holding the newest issuance (latest notBefore, then serial) any member holds; of those, the
  first in inventory order (the group's order in the inventory). When no member holds one,
  the first member that reported. The issuer's acme_request makes the renewal decision from
  that newest issuance, so the group renews once, and no member ever goes back.
- ``letsencrypt_group_delivery`` (after the round): who seals (the issuer, in play 3, after
  it finalized) and who receives (every member that does not hold the issuance the issuer
  will hold, or whose handler is still owed).
- ``letsencrypt_group_certs``: the ``certs`` option of a module on one host: the host's own
  certs, plus its group certs without ``shared_by`` (at ``request``, only those it issues).
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError

try:  # installed as the certbridge.acme collection
    from ansible_collections.certbridge.acme.plugins.module_utils import certbridge_pulse as _pulse
except ImportError:  # a checkout: plugins/ is on ansible.cfg's plugin paths, not a collection
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "certbridge_pulse", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         "module_utils", "certbridge_pulse.py"))
    _pulse = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_pulse)

# A host variable (unset when undefined or unrenderable) and Ansible's truth: the pulse's own.
_get = _pulse._get
_truthy = _pulse.truthy


def _names(spec):
    """Names as acme_request normalises them, sorted (the set is what must agree)."""
    names = spec.get("names", []) if isinstance(spec, dict) else spec
    return sorted({str(n).split(":")[0].strip().lower().rstrip(".") for n in names or []} - {""})


def group_certs_of(certs):
    """{cert: group} of the group certs in one host's letsencrypt_certs."""
    return {str(c): str(s["shared_by"]) for c, s in (certs or {}).items()
            if isinstance(s, dict) and s.get("shared_by") not in (None, "")}


def _plain(spec):
    return {k: v for k, v in spec.items() if k != "shared_by"}


def _declaration(hv, cert):
    """What must agree between members for `cert`: names, key type, profile, self_sign."""
    spec = (_get(hv, "letsencrypt_certs", {}) or {}).get(cert) or {}
    return {
        "names": _names(spec),
        "key_type": (spec.get("key_type") if isinstance(spec, dict) else None)
        or _get(hv, "letsencrypt_key_type", "ec-p256"),
        "profile": (spec.get("profile") if isinstance(spec, dict) else None)
        or _get(hv, "letsencrypt_profile", ""),
        "self_sign": _truthy(_get(hv, "letsencrypt_self_sign_only", False))
        or _truthy(_get(hv, "letsencrypt_self_generate_tokens", False)),
    }


def _shown(value):
    """A declared value as the user wrote it (true/false, "" for an unset profile)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if value == "" else str(value)


def letsencrypt_group_problem(hostvars, host):
    """Why `host`'s group certs cannot be served as declared, or ""."""
    hv = hostvars[host]
    groups = _get(hv, "groups", {}) or {}
    mine = group_certs_of(_get(hv, "letsencrypt_certs", {}))
    problems = []
    for cert, group in sorted(mine.items()):
        if group not in groups:
            problems.append("cert %s: shared_by %r is not an inventory group" % (cert, group))
            continue
        if host not in groups[group]:
            problems.append("cert %s: shared_by %r, but %s is not a member of that group (members: %s)"
                            % (cert, group, host, ", ".join(groups[group]) or "none"))
            continue
        want = _declaration(hv, cert)
        for other in groups[group]:
            if other == host:
                continue
            ohv = hostvars[other]
            if group_certs_of(_get(ohv, "letsencrypt_certs", {})).get(cert) != group:
                continue  # not declaring it there: that member is simply not served
            theirs = _declaration(ohv, cert)
            for field, label in (("names", "names"), ("key_type", "key type"),
                                 ("profile", "profile"), ("self_sign", "self_sign")):
                if want[field] != theirs[field]:
                    problems.append(
                        "cert %s (shared_by %s): %s declares %s %s, %s declares %s %s; every member "
                        "must declare the same" % (cert, group, host, label, _shown(want[field]), other,
                                                   label, _shown(theirs[field])))
    return "; ".join(problems)


def _newer(a, b):
    """True when issuance `a` is newer than `b` (either may be None)."""
    if not a:
        return False
    if not b:
        return True
    return (int(a["not_before"]), str(a["serial"])) > (int(b["not_before"]), str(b["serial"]))


def letsencrypt_group_plan(hostvars, play_hosts):
    """The issuer of each group cert among the members that reported (see the module doc)."""
    if not isinstance(play_hosts, (list, tuple)):
        raise AnsibleFilterError("letsencrypt_group_plan: play_hosts must be a list of host names")
    groups = {}
    plan = {}
    for host in play_hosts:
        hv = hostvars[host]
        groups = groups or (_get(hv, "groups", {}) or {})
        status = _get(hv, "letsencrypt_group_status", None)
        # In check mode a member has no distribution key yet (none is made): it still counts
        # for the issuer's choice, but nothing is sealed to it.
        if not isinstance(status, dict) or status.get("failed") or status.get("skipped") \
                or "held" not in status:
            continue
        for cert, group in group_certs_of(_get(hv, "letsencrypt_certs", {})).items():
            entry = plan.setdefault("%s/%s" % (group, cert), {
                "group": group, "cert": cert, "members": {}, "newest": None})
            held = (status.get("held") or {}).get(cert)
            entry["members"][host] = {
                "public_key": status.get("public_key"),
                "holds": held.get("fingerprint") if held else None,
                "owed": cert in (status.get("owed") or []),
            }
            if _newer(held, entry["newest"]):
                entry["newest"] = dict(held)
    issue = {}
    for entry in plan.values():
        order = list(groups.get(entry["group"], []))
        members = sorted(entry["members"], key=lambda h: order.index(h) if h in order else len(order))
        entry["members"] = {h: entry["members"][h] for h in members}
        newest = (entry["newest"] or {}).get("fingerprint")
        holders = [h for h in members if entry["members"][h]["holds"] == newest] if newest else members
        entry["issuer"] = holders[0]
        issue.setdefault(entry["issuer"], []).append(entry["cert"])
    return {"certs": plan, "issue": issue, "seal": {}, "deliver": []}


def letsencrypt_group_delivery(plan, hostvars):
    """Adds who seals and who receives, once play 1's orders are known."""
    plan = dict(plan or {})
    seal = {}
    deliver = []
    for entry in (plan.get("certs") or {}).values():
        issuer = entry["issuer"]
        request = _get(hostvars[issuer], "letsencrypt_request", {}) or {}
        ordering = entry["cert"] in (request.get("pending") or [])
        newest = (entry.get("newest") or {}).get("fingerprint")
        recipients = []
        for host, member in entry["members"].items():
            if host == issuer or not member["public_key"]:
                continue
            if ordering or member["holds"] != newest:
                recipients.append({"host": host, "public_key": member["public_key"],
                                   "holds": member["holds"]})
            if (ordering or member["holds"] != newest or member["owed"]) and host not in deliver:
                deliver.append(host)
        if recipients:
            seal.setdefault(issuer, {})[entry["cert"]] = recipients
    plan["seal"] = seal
    plan["deliver"] = deliver
    return plan


def letsencrypt_group_certs(certs, plan, host, step="finalize"):
    """The `certs` option for one host's module: its own certs, plus its group certs without
    `shared_by`; at `request`, only the group certs this host issues in this pulse."""
    own = {}
    issuing = set(((plan or {}).get("issue") or {}).get(host) or [])
    for cert, spec in (certs or {}).items():
        if isinstance(spec, dict) and spec.get("shared_by") not in (None, ""):
            if step == "request" and cert not in issuing:
                continue
            own[cert] = _plain(spec)
        elif step != "group":
            own[cert] = spec
    return own


def letsencrypt_group_members(hostvars, hosts):
    """The hosts (of `hosts`, in order) that declare a group certificate: only they report
    their group status, in a play of their own, so a fleet of per-host certificates pays no
    worker per host for a step that does nothing there."""
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("letsencrypt_group_members: hosts must be a list of host names")
    return [h for h in hosts if group_certs_of(_get(hostvars[h], "letsencrypt_certs", {}))]


class FilterModule:
    """certbridge group certificate filters."""

    def filters(self):
        return {
            "letsencrypt_group_problem": letsencrypt_group_problem,
            "letsencrypt_group_members": letsencrypt_group_members,
            "letsencrypt_group_plan": letsencrypt_group_plan,
            "letsencrypt_group_delivery": letsencrypt_group_delivery,
            "letsencrypt_group_certs": letsencrypt_group_certs,
        }
