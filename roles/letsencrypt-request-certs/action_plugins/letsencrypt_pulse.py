# certbridge: the `letsencrypt_pulse` action runs one step of the pulse on one host, in one task.
"""One step of the certbridge pulse on one host: request (play 1), finalize or acknowledge (play 3).

Every task of a pulse costs a forked worker per host, whatever it does; on a no-op pulse the
module call is the only work there is. So each step here does, inside one task, what would
otherwise take several:

- it validates the role's variables against the role's ``meta/argument_specs.yml`` (the pulse
  enters the roles at ``tasks_from: pulse``, which has no spec, so Ansible adds no separate
  validation task per host);
- it runs the certbridge module, either as the plain binary module (``letsencrypt_module_mode:
  transfer``) or, with ``installed``, through the pipelinable ``certbridge_exec`` module that
  hands the same arguments to the binary the setup role installed;
- ``finalize`` first fails the host when the round cannot be finished or a certificate has no
  ``letsencrypt updated <cert>`` handler (Ansible would otherwise abort the whole run for every
  host), then notifies each updated certificate's handler itself;
- ``acknowledge`` (after the handlers ran) records the acknowledgement, prunes when asked, and
  fails the host for everything that was not finished.

This file is shared by letsencrypt-request-certs and letsencrypt-create-certs (a symlink).
"""

from __future__ import annotations

import os
import posixpath

import yaml

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
short_description: Run one step of the certbridge pulse on one host
description:
  - Used by the letsencrypt-request-certs and letsencrypt-create-certs roles; not meant for
    playbooks of their own. Every option not listed here is passed to the module unchanged.
options:
  step:
    description: request (acme_request), finalize or acknowledge (acme_finalize).
    type: str
    choices: [request, finalize, acknowledge]
    required: true
  stop:
    description: finalize - when not empty, fail the host with this message before anything runs.
    type: str
  handlers_for:
    description: finalize - cert names that need a "letsencrypt updated <cert>" handler.
    type: list
    elements: str
  problems:
    description: acknowledge - messages that fail the host after the acknowledgement.
    type: list
    elements: str
  prune:
    description: acknowledge - remove certificate directories that are not in declared_dirs.
    type: bool
  declared_dirs:
    description: acknowledge - the directory names of the declared certificates.
    type: list
    elements: str
"""

HANDLER_PREFIX = "letsencrypt updated "
MODULE_MODES = ("transfer", "installed")
DEFAULT_MODULE_DIR = "/usr/local/lib/certbridge"
CONTROL_ARGS = frozenset(("step", "stop", "handlers_for", "problems", "prune", "declared_dirs"))
STEP_MODULES = {"request": "acme_request", "finalize": "acme_finalize", "acknowledge": "acme_finalize"}


def _role_spec(role_path):
    """The `main` entry point's options of the role at role_path ({} when it has none)."""
    for ext in (".yml", ".yaml"):
        path = os.path.join(role_path, "meta", "argument_specs" + ext)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
            main = (data.get("argument_specs") or {}).get("main") or {}
            return main.get("options") or {}
    return {}


def _play_handler_names(play, templar):
    """Every handler name and listen topic the play knows: its own and its roles'."""
    blocks = list(play.handlers or [])
    try:
        blocks.extend(play.compile_roles_handlers())
    except Exception:  # the play's own list already holds them once compiled by the executor
        pass
    known = set()
    for block in blocks:
        for handler in getattr(block, "block", [block]):
            name = handler.name
            if name:
                try:
                    name = templar.template(name)
                except Exception:  # an untemplatable name cannot be notified by name either
                    pass
                known.add(str(name))
            for topic in handler.listen or []:
                known.add(str(topic))
    return known


class ActionModule(ActionBase):
    """One pulse step; the module runs on the host, everything else on the controller."""

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        try:
            return self._step(result, task_vars)
        finally:
            # The temp dir the module calls shared on the host.
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _step(self, result, task_vars):
        args = dict(self._task.args)
        step = args.get("step")
        if step not in STEP_MODULES:
            raise AnsibleActionFail("step must be one of request, finalize, acknowledge; got %r" % step)
        module_args = {k: v for k, v in args.items() if k not in CONTROL_ARGS}

        invalid = self._validate_role_vars(task_vars)
        if invalid:
            result.update(failed=True, msg=invalid)
            return result

        if step == "request":
            result.update(self._run_module("acme_request", module_args, task_vars))
            return result
        if step == "finalize":
            return self._finalize(result, args, module_args, task_vars)
        return self._acknowledge(result, args, module_args, task_vars)

    # -- steps -------------------------------------------------------------------------------

    def _finalize(self, result, args, module_args, task_vars):
        """Stop or check handlers, run acme_finalize, notify one handler per updated cert."""
        if args.get("stop"):
            result.update(failed=True, msg=str(args["stop"]))
            return result
        wanted = [HANDLER_PREFIX + str(cert) for cert in args.get("handlers_for") or []]
        if not wanted:
            result.update(changed=False, updated=[], msg="nothing to finalize")
            return result
        play = self._task.get_play()
        known = _play_handler_names(play, self._templar) if play is not None else set()
        missing = [name for name in wanted if name not in known]
        if missing:
            result.update(
                failed=True,
                missing_handlers=missing,
                msg="define a handler (or a listen topic) for each certificate of this host in "
                "the play that runs letsencrypt-create-certs; missing: "
                + ", ".join(repr(m) for m in missing),
            )
            return result

        module_result = self._run_module("acme_finalize", module_args, task_vars)
        updated = [str(c) for c in module_result.get("updated") or []]
        result.update(module_result)
        # A failed cert does not stop the others: their handlers still run, and the
        # acknowledge step fails the host with this message afterwards.
        if module_result.get("failed"):
            result["failed"] = False
            result["finalize_failure"] = str(module_result.get("msg") or "acme_finalize failed")
        result["updated"] = updated
        if self._task.check_mode:
            only = [str(c) for c in module_args.get("only") or []]
            renotify = [str(c) for c in args.get("handlers_for") or [] if str(c) not in only]
            result["msg"] = "would finalize %s; would notify %s" % (
                ", ".join(only) or "nothing", ", ".join(renotify) or "nothing more")
        elif updated:
            result["changed"] = True
            # Ansible notifies what a changed result names here; a task-level `notify` could
            # not depend on this task's own result.
            result["_ansible_notify"] = [HANDLER_PREFIX + cert for cert in updated]
        return result

    def _acknowledge(self, result, args, module_args, task_vars):
        """Acknowledge the updates whose handlers ran, prune, then fail for what is unfinished."""
        result["changed"] = False
        if module_args.get("ack") and not self._task.check_mode:
            acked = self._run_module("acme_finalize", dict(module_args, only=[]), task_vars)
            if acked.get("failed"):
                result.update(failed=True, msg="acme_finalize (acknowledge): %s" % acked.get("msg"))
                return result
            result["acknowledged"] = list(module_args["ack"])
        if args.get("prune"):
            removed = self._prune(module_args.get("cert_root"), args.get("declared_dirs") or [], task_vars)
            if isinstance(removed, str):
                result.update(failed=True, msg=removed)
                return result
            result["pruned"] = removed
            result["changed"] = bool(removed)
        problems = [str(p) for p in args.get("problems") or [] if p]
        if problems:
            result.update(failed=True, msg="; ".join(problems))
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _validate_role_vars(self, task_vars):
        """The role's argument spec, checked against the variables as validate_argument_spec
        would; returns the error message, or "" when they are valid."""
        role = getattr(self._task, "_role", None)
        spec = _role_spec(role._role_path) if role is not None else {}
        if not spec:
            return ""
        provided = self._templar.template({k: task_vars[k] for k in spec if k in task_vars})
        checked = ArgumentSpecValidator(spec).validate(provided, validate_role_argument_spec=True)
        if checked.error_messages:
            return "Validation of the %s role's variables failed:\n%s" % (
                role.get_name(), "\n".join(checked.error_messages))
        return ""

    def _run_module(self, name, module_args, task_vars):
        """Runs a certbridge module the way letsencrypt_module_mode says."""
        mode = self._templar.template(task_vars.get("letsencrypt_module_mode", "transfer"))
        if mode == "transfer":
            return self._execute_module(module_name=name, module_args=module_args, task_vars=task_vars)
        if mode == "installed":
            module_dir = self._templar.template(task_vars.get("letsencrypt_module_dir", DEFAULT_MODULE_DIR))
            return self._execute_module(
                module_name="certbridge_exec",
                module_args={"binary": posixpath.join(str(module_dir), name), "args": module_args},
                task_vars=task_vars,
            )
        raise AnsibleActionFail(
            "letsencrypt_module_mode must be one of %s, not %r" % (", ".join(MODULE_MODES), mode))

    def _prune(self, cert_root, declared_dirs, task_vars):
        """Removes cert directories under cert_root that hold a certificate but are not declared;
        returns the removed paths, or an error message."""
        if not cert_root:
            return "prune needs cert_root"
        found = self._execute_module(
            module_name="ansible.builtin.find",
            module_args={"paths": cert_root, "patterns": ["current", "fullchain.pem", "fullchain.cer"],
                         "file_type": "any", "recurse": True, "depth": 2},
            task_vars=task_vars,
        )
        if found.get("failed"):
            return "prune: could not list %s: %s" % (cert_root, found.get("msg"))
        keep = {posixpath.join(cert_root, d) for d in declared_dirs}
        keep.update((cert_root.rstrip("/"), posixpath.join(cert_root, ".certbridge")))
        stale = sorted({posixpath.dirname(f["path"]) for f in found.get("files") or []} - keep)
        for path in stale:
            removed = self._execute_module(
                module_name="ansible.builtin.file",
                module_args={"path": path, "state": "absent"},
                task_vars=task_vars,
            )
            if removed.get("failed"):
                return "prune: could not remove %s: %s" % (path, removed.get("msg"))
        return stale
