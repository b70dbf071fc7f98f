# certbridge: filters of the pulse's http-01 tokens (which finished tokens a host removes).
"""``letsencrypt_http_retired``: the tokens the pulse's round placed on one host whose orders
finished in play 3 (each finalizing host's ``acme_http_done``), as ``acme_http_publish``'s
``retired`` option of the cleanup play. The decision is certbridge_pulse.http_retired.
"""

from __future__ import annotations

import os

try:  # installed as the certbridge.acme collection
    from ansible_collections.certbridge.acme.plugins.module_utils import certbridge_pulse as pulse
except ImportError:  # a checkout: plugins/ is on ansible.cfg's plugin paths, not a collection
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "certbridge_pulse", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         "module_utils", "certbridge_pulse.py"))
    pulse = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(pulse)


def letsencrypt_http_retired(hostvars, target):
    """acme_http_publish's `retired` for `target`, from the round and play 3's results."""
    round_ = pulse.plain(pulse._get(hostvars["localhost"], "letsencrypt_round", {})) or {}
    done = {}
    for host in round_.get("finalize") or []:
        finalized = pulse.plain(pulse._get(hostvars[host], "letsencrypt_finalize", {})) or {}
        if isinstance(finalized, dict):
            done[host] = finalized.get("acme_http_done") or []
    return pulse.http_retired(round_, target, done)


class FilterModule:
    """certbridge http-01 filters."""

    def filters(self):
        return {
            "letsencrypt_http_retired": letsencrypt_http_retired,
        }
