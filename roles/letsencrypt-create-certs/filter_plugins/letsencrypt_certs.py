# certbridge: filters over a host's `letsencrypt_certs` (directory names).
"""Filters that read letsencrypt_certs the way acme_request does."""

from __future__ import annotations


def _names(spec):
    return spec.get("names", []) if isinstance(spec, dict) else (spec or [])


def _first_dir(spec):
    names = _names(spec)
    if not names:
        return None
    name = str(names[0]).split(":")[0].strip().lower().rstrip(".")
    return name[2:] if name.startswith("*.") else name


def letsencrypt_cert_dirs(certs):
    """Directory names (first name without "*." and ":port") of every declared cert."""
    return sorted({d for d in (_first_dir(spec) for spec in (certs or {}).values()) if d})


def letsencrypt_rejected_message(rejected):
    """One line per value acme_txt_publish rejected: cert, name, reason and the fix."""
    return "%s (%s) not published: %s; fix: %s" % (
        rejected.get("cert"), rejected.get("name"), rejected.get("reason"), rejected.get("fix"))


class FilterModule:
    """certbridge letsencrypt_certs filters."""

    def filters(self):
        return {
            "letsencrypt_cert_dirs": letsencrypt_cert_dirs,
            "letsencrypt_rejected_message": letsencrypt_rejected_message,
        }
