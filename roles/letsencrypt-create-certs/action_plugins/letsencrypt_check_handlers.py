# certbridge: the `letsencrypt_check_handlers` action fails a host whose certs lack a handler.
"""Check that the play defines a handler for every certificate this host may update.

Ansible aborts the whole run, for every host, when a task notifies a handler the play does
not define. Handlers are play-scoped, so only the controller side of a task can see them:
this action looks at the play's handlers (its own and its roles') and fails just this host,
naming each missing handler, before acme_finalize touches anything.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
short_description: Fail a host whose certificates lack a "letsencrypt updated <cert>" handler
options:
  certs:
    description: Cert names the host may update.
    type: list
    elements: str
    required: true
  prefix:
    description: Handler name prefix.
    type: str
    default: "letsencrypt updated "
"""


def _play_handlers(play):
    """Every handler the play will know: its own and those of its roles."""
    blocks = list(play.handlers or [])
    try:
        blocks.extend(play.compile_roles_handlers())
    except Exception:  # the play's own list already holds them once compiled by the executor
        pass
    for block in blocks:
        for handler in getattr(block, "block", [block]):
            yield handler


class ActionModule(ActionBase):
    """Controller-side check; never runs anything on the host."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("certs", "prefix"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        certs = self._task.args.get("certs") or []
        prefix = self._task.args.get("prefix", "letsencrypt updated ")
        if not isinstance(certs, (list, tuple)):
            raise AnsibleActionFail("certs must be a list of cert names")
        play = self._task.get_play()
        if play is None:
            raise AnsibleActionFail("letsencrypt_check_handlers must run inside a play")
        known = set()
        for handler in _play_handlers(play):
            name = handler.name
            if name:
                try:
                    name = self._templar.template(name)
                except Exception:  # an untemplatable name cannot be notified by name either
                    pass
                known.add(str(name))
            for topic in handler.listen or []:
                known.add(str(topic))
        wanted = [prefix + str(cert) for cert in certs]
        missing = [name for name in wanted if name not in known]
        result["changed"] = False
        result["handlers"] = wanted
        if missing:
            result["failed"] = True
            result["missing"] = missing
            result["msg"] = (
                "define a handler (or a listen topic) for each certificate of this host in the "
                "play that runs letsencrypt-create-certs; missing: " + ", ".join(repr(m) for m in missing)
            )
        return result
