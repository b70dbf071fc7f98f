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
from ansible.module_utils.parsing.convert_bool import BOOLEANS, boolean
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
short_description: Run one step of the certbridge pulse on one host
description:
  - Used by the letsencrypt-request-certs and letsencrypt-create-certs roles; not meant for
    playbooks of their own. The module's options are built from the role's variables
    (letsencrypt_*); any other option given to the task is passed to the module as it is.
  - finalize and acknowledge read the pulse round of play 1 (hostvars of localhost,
    letsencrypt_round), the DNS host's letsencrypt_publish and this host's
    letsencrypt_request and letsencrypt_finalize.
options:
  step:
    description: request (acme_request), finalize or acknowledge (acme_finalize).
    type: str
    choices: [request, finalize, acknowledge]
    required: true
"""

HANDLER_PREFIX = "letsencrypt updated "
MODULE_MODES = ("transfer", "installed")
DEFAULT_MODULE_DIR = "/usr/local/lib/certbridge"
CONTROL_ARGS = frozenset(("step",))
STEP_MODULES = {"request": "acme_request", "finalize": "acme_finalize", "acknowledge": "acme_finalize"}
LE_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LE_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
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


_UNSET = object()


def _force(value):
    """letsencrypt_force: true/false, or cert names; -e gives strings ("true", "a,b")."""
    if isinstance(value, str):
        if value.strip().lower() in BOOLEANS:
            return boolean(value.strip().lower(), strict=False)
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


def _plain(value):
    """A registered result or fact as a plain dict (or the value itself)."""
    return dict(value) if hasattr(value, "keys") else value


def _host_round(task_vars):
    """This host's part of the pulse round (built once in play 1 by the letsencrypt_round
    filter): what to finalize, what was rejected, and why the round cannot go on here."""
    me = task_vars.get("inventory_hostname")
    hostvars = task_vars.get("hostvars") or {}
    try:
        round_ = _plain(hostvars["localhost"]["letsencrypt_round"]) or {}
    except Exception:  # not set: play 1 did not run in this playbook
        round_ = {}
    request = _plain(task_vars.get("letsencrypt_request")) or {}
    dns_hosts = list(round_.get("dns_hosts") or [])
    publish = {}
    if dns_hosts:
        try:
            publish = _plain(hostvars[dns_hosts[0]]["letsencrypt_publish"]) or {}
        except Exception:  # not set: play 2 did not run on it (--limit)
            publish = {}
    rejected = [dict(r) for r in publish.get("rejected") or [] if r.get("host") == me]
    rejected_certs = {str(r.get("cert")) for r in rejected}
    deferred = [dict(d) for d in (round_.get("deferred") or []) if d.get("host") == me]
    rejected_certs.update(str(d.get("cert")) for d in deferred)
    pending = [str(c) for c in request.get("pending") or []]
    stop = str(round_.get("problem") or "") if round_ else (
        "the pulse round of play 1 is missing: run playbooks/service-letsencrypt.yaml as a whole")
    has_records = any(r.get("host") == me for r in round_.get("records") or [])
    if not stop and has_records and "published" not in publish:
        stop = ("the dns-01 values of this host were not published: the publishing host %s did "
                "not run (was it left out by --limit?)" % ", ".join(dns_hosts))
    return {
        "stop": stop,
        "finalize": [c for c in pending if c not in rejected_certs],
        "unacked": [str(c) for c in request.get("unacked") or []],
        "rejected": rejected,
        "refused": [d for d in deferred if d.get("refused")],
        "request_failure": str(request.get("msg") or "acme_request failed") if request.get("failed") else "",
    }


def _cname_check(task_vars, var):
    """acme_request's `cname_check`, from the DNS host's signing zones: play 1 runs before the
    DNS host's role, so its inventory variables are read through hostvars. None (no check)
    when there is no single DNS host, it names no zones, or letsencrypt_request_cname_check
    is off."""
    if not boolean(var("letsencrypt_request_cname_check", True), strict=False):
        return None
    groups = task_vars.get("groups") or {}
    dns_hosts = list(groups.get(var("letsencrypt_dns_group") or "") or [])
    if len(dns_hosts) != 1:
        return None
    try:
        dns_vars = task_vars["hostvars"][dns_hosts[0]]
    except Exception:  # no hostvars for it: nothing to check against
        return None

    def dns_var(name, default):
        try:
            return dns_vars[name] if name in dns_vars else default
        except Exception:  # an undefined value counts as unset
            return default

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


def _cert_dirs(certs):
    """Directory names of the declared certs: the first name, without "*." and ":port"."""
    dirs = []
    for spec in (certs or {}).values():
        names = spec.get("names", []) if isinstance(spec, dict) else (spec or [])
        if names:
            name = str(names[0]).split(":")[0].strip().lower().rstrip(".")
            dirs.append(name[2:] if name.startswith("*.") else name)
    return dirs


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
        role_vars = self._role_var = self._role_vars(task_vars)
        invalid = self._validate_role_vars(role_vars)
        if invalid:
            result.update(failed=True, msg=invalid)
            return result
        # Options given to the task win over those built from the role's variables.
        module_args = self._module_args(step, role_vars)
        module_args.update((k, v) for k, v in args.items() if k not in CONTROL_ARGS)

        if step == "request":
            if "cname_check" not in module_args and not module_args.get("self_sign"):
                check = _cname_check(task_vars, role_vars)
                if check:
                    module_args["cname_check"] = check
            result.update(self._run_module("acme_request", module_args, task_vars))
            return result
        if step == "finalize":
            return self._finalize(result, args, module_args, task_vars)
        return self._acknowledge(result, args, module_args, task_vars)

    # -- steps -------------------------------------------------------------------------------

    def _finalize(self, result, args, module_args, task_vars):
        """Stop or check handlers, run acme_finalize, notify one handler per updated cert."""
        view = _host_round(task_vars)
        if view["stop"]:
            result.update(failed=True, msg=view["stop"])
            return result
        only = view["finalize"]
        handlers_for = only + [c for c in view["unacked"] if c not in only]
        wanted = [HANDLER_PREFIX + cert for cert in handlers_for]
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

        module_args.setdefault("only", only)
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
            renotify = [c for c in handlers_for if c not in only]
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
        finalized = _plain(task_vars.get("letsencrypt_finalize")) or {}
        ack = module_args.get("ack", [str(c) for c in finalized.get("updated") or []])
        if ack and not self._task.check_mode:
            acked = self._run_module("acme_finalize", dict(module_args, only=[], ack=ack), task_vars)
            if acked.get("failed"):
                result.update(failed=True, msg="acme_finalize (acknowledge): %s" % acked.get("msg"))
                return result
            result["acknowledged"] = ack
        if boolean(self._role_var("letsencrypt_prune", False), strict=False):
            declared = _cert_dirs(module_args.get("certs"))
            removed = self._prune(module_args.get("cert_root"), declared, task_vars)
            if isinstance(removed, str):
                result.update(failed=True, msg=removed)
                return result
            result["pruned"] = removed
            result["changed"] = bool(removed)
        view = _host_round(task_vars)
        problems = ["%s (%s) not published: %s; fix: %s" % (r.get("cert"), r.get("name"), r.get("reason"), r.get("fix"))
                    for r in view["rejected"]]
        problems.extend("%s: %s" % (d.get("cert"), d.get("reason")) for d in view["refused"])
        if view["request_failure"]:
            problems.append("acme_request: " + view["request_failure"])
        if finalized.get("finalize_failure"):
            problems.append("acme_finalize: " + str(finalized["finalize_failure"]))
        if problems:
            result.update(failed=True, msg="; ".join(problems))
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _role_vars(self, task_vars):
        """The role's variables (those of its argument spec), templated once, as a lookup."""
        role = getattr(self._task, "_role", None)
        self._spec = _role_spec(role._role_path) if role is not None else {}
        cache = {}

        def var(name, default=None):
            if name not in cache:
                cache[name] = self._templar.template(task_vars[name]) if name in task_vars else default
            return cache[name]

        return var

    def _validate_role_vars(self, var):
        """The role's argument spec, checked against the variables as validate_argument_spec
        would; returns the error message, or "" when they are valid."""
        if not self._spec:
            return ""
        provided = {name: var(name) for name in self._spec if var(name, _UNSET) is not _UNSET}
        checked = ArgumentSpecValidator(self._spec).validate(provided, validate_role_argument_spec=True)
        if checked.error_messages:
            return "Validation of the %s role's variables failed:\n%s" % (
                self._task._role.get_name(), "\n".join(checked.error_messages))
        return ""

    @staticmethod
    def _module_args(step, var):
        """The module's options from the role's variables (the same for every step, plus the
        step's own): one place instead of a Jinja expression per option and host."""
        staging = boolean(var("letsencrypt_use_staging", False), strict=False)
        args = {
            "certs": var("letsencrypt_certs", {}),
            "directory": var("letsencrypt_directory")
            or (var("letsencrypt_staging_directory", LE_STAGING) if staging
                else var("letsencrypt_production_directory", LE_PRODUCTION)),
            "staging": staging,
            "cert_root": var("letsencrypt_cert_root"),
            # Empty: the module keeps each certificate's key type.
            "key_type": var("letsencrypt_key_type") or None,
            "self_sign": boolean(var("letsencrypt_self_sign_only", False), strict=False)
            or boolean(var("letsencrypt_self_generate_tokens", False), strict=False),
            "log_file": posixpath.join(str(var("letsencrypt_log_dir")), "certbridge.log"),
            "request_timeout": var("letsencrypt_http_timeout"),
        }
        for option, name in OPTIONAL_ARGS.items():
            if var(name) not in (None, ""):
                args[option] = var(name)
        if step == "request":
            args["timeout"] = var("letsencrypt_request_timeout")
            args["ari_interval"] = var("letsencrypt_ari_interval")
            args["force"] = _force(var("letsencrypt_force", False))
            if var("letsencrypt_renew_days") is not None:
                args["renew_days"] = var("letsencrypt_renew_days")
            if var("letsencrypt_metrics_file"):
                args["metrics_file"] = var("letsencrypt_metrics_file")
        else:
            args["timeout"] = var("letsencrypt_finalize_timeout")
            if step == "finalize" and var("letsencrypt_dns_check"):
                args["dns_check"] = var("letsencrypt_dns_check")
        return {k: v for k, v in args.items() if v is not None}

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
