# certbridge: the `letsencrypt_group` action runs one group-certificate step on one host.
"""Group certificates in the pulse (see plugins/filter/letsencrypt_group.py for the plan).

- ``status`` (play 1, before acme_request): fail at once with the declaration problem the
  ``problem`` option carries (nothing ordered, nothing installed); else run acme_group to make
  the member's distribution key (once) and report its public key and what it holds.
- ``seal`` (play 3, on the issuer, after it finalized): seal the cert to the members the plan
  names; the result holds only ciphertext.
- ``open`` (the delivery play, on those members): hand each member the bundle addressed to it,
  install it, and notify ``letsencrypt updated <cert>`` for what changed (or is still owed).

Options and module mode come from the letsencrypt_pulse action (loaded through Ansible's plugin
loader), so both run the modules the same way.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
short_description: Run one group-certificate step of the certbridge pulse on one host
description:
  - Used by the letsencrypt-request-certs and letsencrypt-create-certs roles; not meant for
    playbooks of their own.
options:
  step:
    description: status (play 1), seal (play 3, issuer) or open (delivery play, members).
    type: str
    choices: [status, seal, open]
    required: true
  problem:
    description: status only; a declaration problem of this host (letsencrypt_group_problem).
    type: str
"""

HANDLER_PREFIX = "letsencrypt updated "


def _plain(value):
    return dict(value) if hasattr(value, "keys") else value


class ActionModule(ActionBase):
    """One group step; the module runs on the host, the plan is read on the controller."""

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        try:
            return self._step(result, dict(self._task.args), task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _pulse(self):
        # From an installed collection, its sibling has the collection's prefix.
        prefix = __name__.rsplit(".plugins.action.", 1)[0][len("ansible_collections."):] + "." \
            if __name__.startswith("ansible_collections.") else ""
        return self._shared_loader_obj.action_loader.get(
            prefix + "letsencrypt_pulse", task=self._task, connection=self._connection,
            play_context=self._play_context, loader=self._loader, templar=self._templar,
            shared_loader_obj=self._shared_loader_obj)

    def _step(self, result, args, task_vars):
        step = args.get("step")
        if step not in ("status", "seal", "open"):
            raise AnsibleActionFail("step must be one of status, seal, open; got %r" % step)
        if step == "status" and args.get("problem"):
            result.update(failed=True, msg="letsencrypt_certs: %s; nothing was ordered or installed"
                          % args["problem"])
            return result
        pulse = self._pulse()
        var = pulse._role_vars(task_vars)
        certs = var("letsencrypt_certs", {}) or {}
        groups = {str(c): str(s["shared_by"]) for c, s in certs.items()
                  if isinstance(s, dict) and s.get("shared_by") not in (None, "")}
        if not groups:
            result.update(changed=False, msg="no group certificates here")
            return result
        invalid = pulse._validate_role_vars(var)
        if invalid:
            result.update(failed=True, msg=invalid)
            return result
        me = task_vars.get("inventory_hostname")
        module_args = _pulse_module_args(pulse, "acknowledge", var)
        module_args.update(
            certs={c: {k: v for k, v in certs[c].items() if k != "shared_by"} for c in groups},
            groups=groups, member=me)
        plan = self._plan(task_vars)
        if step == "status":
            module_args["op"] = "status"
            result.update(pulse._run_module("acme_group", module_args, task_vars))
            return result
        if step == "seal":
            recipients = (plan.get("seal") or {}).get(me) or {}
            if not recipients:
                result.update(changed=False, msg="nothing to seal")
                return result
            module_args.update(op="seal", recipients=recipients)
            result.update(pulse._run_module("acme_group", module_args, task_vars))
            return result
        return self._open(result, pulse, module_args, plan, groups, me, task_vars)

    @staticmethod
    def _plan(task_vars):
        try:
            return _plain(task_vars["hostvars"]["localhost"]["letsencrypt_group_round"]) or {}
        except Exception:  # not set: play 1 did not run in this playbook
            return {}

    def _open(self, result, pulse, module_args, plan, groups, me, task_vars):
        """Open the bundles addressed here, install them, notify their handlers."""
        hostvars = task_vars.get("hostvars") or {}
        bundles = {}
        owed = []
        for cert, group in groups.items():
            entry = (plan.get("certs") or {}).get("%s/%s" % (group, cert)) or {}
            issuer = entry.get("issuer")
            if not issuer or issuer == me:
                continue
            try:
                sealed = _plain(hostvars[issuer]["letsencrypt_group_sealed"]) or {}
            except Exception:  # the issuer did not seal (it failed in play 3)
                sealed = {}
            bundle = ((sealed.get("bundles") or {}).get(cert) or {}).get(me)
            if bundle:
                bundles[cert] = bundle
            if ((entry.get("members") or {}).get(me) or {}).get("owed"):
                owed.append(cert)
        wanted = sorted(set(bundles) | set(owed))
        if not wanted:
            result.update(changed=False, updated=[], msg="no bundle for this member")
            return result
        play = self._task.get_play()
        known = pulse_handler_names(pulse, play, self._templar)
        missing = [HANDLER_PREFIX + c for c in wanted if HANDLER_PREFIX + c not in known]
        if missing:
            result.update(failed=True, missing_handlers=missing,
                          msg="define a handler (or a listen topic) for each certificate of this host; "
                          "missing: " + ", ".join(repr(m) for m in missing))
            return result
        updated = set(owed)
        if bundles:
            module_args.update(op="open", bundles=bundles)
            opened = pulse._run_module("acme_group", module_args, task_vars)
            result.update(opened)
            updated.update(str(c) for c in opened.get("updated") or [])
            # The task is no_log: the acknowledge step fails the host with this message, after
            # the handlers of what did install ran.
            if opened.get("failed"):
                result["failed"] = False
                result["finalize_failure"] = str(opened.get("msg") or "acme_group failed")
        result["updated"] = sorted(updated)
        if updated and not self._task.check_mode:
            result["changed"] = True
            result["_ansible_notify"] = [HANDLER_PREFIX + c for c in sorted(updated)]
        return result


def _pulse_module_args(pulse, step, var):
    """The module options the pulse action builds from the role's variables (a method of the
    action, or a function of its module_utils where the pulse's Python lives in plugins/)."""
    import sys

    if hasattr(pulse, "_module_args"):
        return pulse._module_args(step, var)
    return sys.modules[type(pulse).__module__].pulse.module_args(step, var)


def pulse_handler_names(pulse, play, templar):
    """The handler names the play knows, as the pulse action finds them."""
    import sys

    if play is None:
        return set()
    return sys.modules[type(pulse).__module__]._play_handler_names(play, templar)
