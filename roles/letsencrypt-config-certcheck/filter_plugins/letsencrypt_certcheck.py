# certbridge: the `letsencrypt_certcheck_entries` filter (OpenDev's certcheck domain lines).
"""Turn a host's letsencrypt_certs into "<first name> <port>" lines, ":port" kept."""

from __future__ import annotations


def _names(spec):
    return spec.get("names", []) if isinstance(spec, dict) else (spec or [])


def letsencrypt_certcheck_entries(certs):
    """OpenDev's certcheck lines: "<first name> <port>" per cert, port 443 unless given."""
    out = []
    for spec in (certs or {}).values():
        names = _names(spec)
        if not names:
            continue
        host, _, port = str(names[0]).partition(":")
        host = host.strip().lower().rstrip(".")
        if host.startswith("*."):
            host = host[2:]
        out.append("%s %s" % (host, port or "443"))
    return out


class FilterModule:
    """certbridge certcheck filters."""

    def filters(self):
        return {"letsencrypt_certcheck_entries": letsencrypt_certcheck_entries}
