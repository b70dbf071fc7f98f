# certbridge: the fleet rate budget - which new certificates a pulse may order under the CA's limits.
"""Plans Let's Encrypt's rate limits for the whole fleet, on the controller, before any order.

Play 1's acme_request runs with ``admit`` set: a cert whose order would count against the
limits (a name set the host holds no certificate of: ``missing``, ``names_changed``...) is
``held`` - reported, not ordered. Renewals are never held: Let's Encrypt exempts them from the
per-domain and new-order limits (and those naming ``replaces`` from all), so they go first.
This module admits held certs up to the budgets; the admitted ones are ordered by a second
acme_request call on their hosts only, the others are deferred with reason ``rate_budget``,
the limit that binds and the earliest time they fit.

Each limit is a token bucket as Let's Encrypt applies it (capacity ``count``, one token back
every ``period / count``), fed with the history the hosts keep (``new_cert_at``: when each
cert last ordered a new certificate under the budget) and then with this pulse's admissions.
"""

from __future__ import annotations

import time

WEEK = 7 * 86400
THREE_HOURS = 3 * 3600
# Limit name -> (role variable, Let's Encrypt's count, period in seconds, what it is counted per).
LIMITS = {
    "registered_domain": ("letsencrypt_rate_registered_domain", 50, WEEK, "registered domain"),
    "exact_set": ("letsencrypt_rate_exact_set", 5, WEEK, "exact set of names"),
    "new_orders": ("letsencrypt_rate_new_orders", 300, THREE_HOURS, "account (host)"),
    "new_accounts": ("letsencrypt_rate_new_accounts", 10, THREE_HOURS, "egress address"),
}
LE_PRODUCTION_HOST = "acme-v02.api.letsencrypt.org"
PSL_MISSING = ("the fleet rate budget counts names per registered domain with the Public Suffix "
               "List: install the Python package publicsuffixlist on the controller "
               "(pip install publicsuffixlist), or set letsencrypt_rate_budget: false")


def enabled(setting, directory):
    """letsencrypt_rate_budget: true/false, or "auto" - on for Let's Encrypt's production CA only
    (its staging CA's limits are far higher; other CAs publish none)."""
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return LE_PRODUCTION_HOST in str(directory or "")
    if isinstance(setting, str):
        return setting.strip().lower() in ("y", "yes", "on", "1", "true", "t")
    return bool(setting)


def budgets(var):
    """{limit: (count, period)} from the role's variables (``var(name, default)``); a count of 0
    switches that limit off."""
    out = {}
    for limit, (name, count, period, _) in LIMITS.items():
        value = var(name, count)
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError("%s must be a whole number (0 switches the limit off), not %r" % (name, value))
        if value < 0:
            raise ValueError("%s must be 0 or more, not %d" % (name, value))
        if value:
            out[limit] = (value, period)
    return out


def registered_domain_function():
    """The registered domain of a name (Public Suffix List); raises ValueError naming the fix
    when the maintained library is missing."""
    try:
        from publicsuffixlist import PublicSuffixList
    except ImportError:
        raise ValueError(PSL_MISSING)
    psl = PublicSuffixList()

    def registered(name):
        name = str(name).lower().rstrip(".")
        if name.startswith("*."):
            name = name[2:]
        return psl.privatesuffix(name) or name

    return registered


class Bucket:
    """One token bucket (GCRA): ``tat`` is the theoretical arrival time of the next request."""

    __slots__ = ("interval", "tolerance", "tat")

    def __init__(self, count, period):
        self.interval = period / count
        self.tolerance = period - self.interval
        self.tat = float("-inf")

    def earliest(self, now):
        return max(now, self.tat - self.tolerance)

    def take(self, at):
        self.tat = max(self.tat, at) + self.interval

    def copy(self):
        other = Bucket.__new__(Bucket)
        other.interval, other.tolerance, other.tat = self.interval, self.tolerance, self.tat
        return other


def _describe(limit, key, limits):
    count, period = limits[limit]
    per = LIMITS[limit][3]
    span = "%d d" % (period // 86400) if period % 86400 == 0 else "%d h" % (period // 3600)
    label = " ".join(sorted(key)) if isinstance(key, frozenset) else key
    return "%s: %d per %s per %s (%s)" % (limit, count, span, per, label)


def plan(requests, history, limits, now=None):
    """Admit or defer the held certs.

    ``requests``: held certs in the order they ask, each a dict with host, cert, names, egress,
    new_account (its host has no account yet). ``history``: earlier new certificates, each a
    dict with host, names, egress, at (unix time), first (the host's first: it made the
    account). ``limits``: {limit: (count, period)} (see budgets); names are expected already
    reduced by ``registered`` into the ``domains`` key of each entry.

    Returns {"admit": {host: [cert]}, "deferred": {host: {cert: {...}}}}."""
    now = int(time.time()) if now is None else now
    buckets = {}

    def keys(entry, with_account):
        out = []
        if "registered_domain" in limits:
            out.extend(("registered_domain", d) for d in sorted(set(entry["domains"])))
        if "exact_set" in limits:
            out.append(("exact_set", frozenset(entry["names"])))
        if "new_orders" in limits:
            out.append(("new_orders", entry["host"]))
        if "new_accounts" in limits and with_account:
            out.append(("new_accounts", entry["egress"]))
        return out

    def bucket(key, table):
        if key not in table:
            table[key] = Bucket(*limits[key[0]])
        return table[key]

    for past in sorted(history, key=lambda h: h["at"]):
        for key in keys(past, past.get("first", False)):
            bucket(key, buckets).take(past["at"])

    admit, deferred, waiting = {}, {}, []
    accounts_made = set()
    for req in requests:
        need_account = req.get("new_account", False) and req["host"] not in accounts_made
        ks = keys(req, need_account)
        times = [(bucket(k, buckets).earliest(now), k) for k in ks]
        if all(t <= now for t, _ in times):
            for k in ks:
                buckets[k].take(now)
            accounts_made.add(req["host"])
            admit.setdefault(req["host"], []).append(req["cert"])
        else:
            waiting.append(req)

    # When each deferred cert fits, if the queue is served in this order and nothing else asks.
    projected = {k: b.copy() for k, b in buckets.items()}
    for req in waiting:
        need_account = req.get("new_account", False) and req["host"] not in accounts_made
        ks = keys(req, need_account)
        times = [(bucket(k, projected).earliest(now), k) for k in ks]
        at, binding = max(times, key=lambda tk: tk[0])
        at = int(at + 0.999)
        for k in ks:
            projected[k].take(at)
        accounts_made.add(req["host"])
        deferred.setdefault(req["host"], {})[req["cert"]] = {
            "reason": "rate_budget",
            "limit": _describe(binding[0], binding[1], limits),
            "earliest": at,
            "earliest_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        }
    return {"admit": admit, "deferred": deferred}


def collect(results, certs_of, egress_of, registered, now):
    """requests and history for ``plan`` from play 1's results.

    ``results``: host -> acme_request's result (in play order); ``certs_of(host)``: cert name
    -> normalised names; ``egress_of(host)``: its egress address label. Held certs are asked
    round-robin over hosts (every host's first held cert before any host's second)."""
    requests, history = [], []
    per_host = []
    for host, result in results.items():
        decisions = result.get("certs") or {}
        names = certs_of(host)
        has_account = any(
            isinstance(d, dict) and (d.get("not_after") is not None or d.get("new_cert_at") is not None)
            for d in decisions.values())
        held, stamps = [], []
        for cert, decision in sorted(decisions.items()):
            if not isinstance(decision, dict):
                continue
            entry = {"host": host, "cert": cert, "names": names.get(cert, []),
                     "egress": egress_of(host)}
            entry["domains"] = [registered(n) for n in entry["names"]]
            if decision.get("held"):
                entry["new_account"] = not has_account
                held.append(entry)
            # Every recorded time counts, however old: a bucket kept full since a first
            # rollout's burst still owes that burst (Let's Encrypt's bucket does too); one
            # time per cert, so the history never grows past the fleet's size.
            at = decision.get("new_cert_at")
            if at is not None and at <= now:
                entry["at"] = at
                stamps.append(entry)
        if stamps:
            first = min(stamps, key=lambda e: e["at"])
            # The host's oldest recorded new certificate made its account when it holds no
            # older certificate (an approximation that can only over-count).
            first["first"] = all(
                (decisions.get(c) or {}).get("new_cert_at") is not None
                for c in decisions if isinstance(decisions.get(c), dict)
                and (decisions[c].get("not_after") is not None))
            history.extend(stamps)
        per_host.append(held)
    rank = 0
    while any(len(h) > rank for h in per_host):
        requests.extend(h[rank] for h in per_host if len(h) > rank)
        rank += 1
    return requests, history


def summary(plan_):
    """Lines for the pulse's output: how many new certificates were admitted and deferred, and
    per binding limit the first time a deferred one fits."""
    admitted = sum(len(c) for c in plan_["admit"].values())
    deferred = [d for certs in plan_["deferred"].values() for d in certs.values()]
    if not admitted and not deferred:
        return []
    lines = ["rate budget: %d new certificate(s) admitted, %d deferred (rate_budget)" % (admitted, len(deferred))]
    first = {}
    for d in deferred:
        if d["limit"] not in first or d["earliest"] < first[d["limit"]]["earliest"]:
            first[d["limit"]] = d
    for limit, d in sorted(first.items()):
        count = sum(1 for x in deferred if x["limit"] == limit)
        lines.append("rate budget: %d deferred by %s; the first fits at %s" % (count, limit, d["earliest_utc"]))
    return lines


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def deferral_metrics(deferred, crowded, now):
    """The round's Prometheus textfile: per cert this pulse did not order, when it fits.

    ``deferred``: the plan's {host: {cert: {limit, earliest, ...}}} (reason rate_budget);
    ``crowded``: the round's values-cap entries (reason crowded: they fit at the next pulse, so
    their time is ``now``; those refused outright are failures, not deferrals)."""
    rows = []
    for host, certs in sorted((deferred or {}).items()):
        for cert, d in sorted(certs.items()):
            limit = str(d.get("limit", "")).split(":", 1)[0]
            rows.append((host, cert, "rate_budget", limit, int(d.get("earliest", now))))
    for d in sorted(crowded or [], key=lambda d: (str(d.get("host")), str(d.get("cert")))):
        if not d.get("refused"):
            rows.append((str(d.get("host")), str(d.get("cert")), "crowded", "max_values_per_name", int(now)))
    out = ["# HELP certbridge_cert_deferred_until_seconds When a cert the pulse did not order fits (unix time): "
           "reason rate_budget (the limit that binds) or crowded (values per name: the next pulse).",
           "# TYPE certbridge_cert_deferred_until_seconds gauge"]
    out += ['certbridge_cert_deferred_until_seconds{host="%s",cert="%s",reason="%s",limit="%s"} %d'
            % (_label(h), _label(c), r, _label(lim), at) for h, c, r, lim, at in rows]
    out += ["# HELP certbridge_round_deferred_certs Certs the last pulse did not order, by reason.",
            "# TYPE certbridge_round_deferred_certs gauge"]
    out += ['certbridge_round_deferred_certs{reason="%s"} %d' % (reason, sum(1 for r in rows if r[2] == reason))
            for reason in ("crowded", "rate_budget")]
    return "\n".join(out) + "\n"


def write_textfile(path, text):
    """Replaces ``path`` with ``text`` when it differs (a node_exporter textfile on the
    controller): a temp file in the same directory, created exclusively, then renamed over it;
    a link at ``path`` is replaced, never written through. Returns whether it wrote."""
    import os
    import tempfile

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        old = None
    except OSError:
        old = None  # a link (ELOOP): replace it
    else:
        with os.fdopen(fd, "rb") as f:
            old = f.read()
    if old == text.encode():
        return False
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".certbridge-round-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True
