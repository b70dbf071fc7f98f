# certbridge: the `letsencrypt_pulse` action runs one step of the pulse on one host, in one task.
"""One step of the certbridge pulse: request (play 1), round (once, play 1), finalize or
acknowledge (play 3), check (the last play), certcheck (letsencrypt-config-certcheck).

Every task of a pulse costs a forked worker per host, whatever it does; on a no-op pulse the
module call is the only work there is. So each step here does, inside one task, what would
otherwise take several:

- it validates the role's variables against the role's ``meta/argument_specs.yml`` (the pulse
  enters the roles at ``tasks_from: pulse``, which has no spec, so Ansible adds no separate
  validation task per host);
- ``request`` first fails the host, before any order, for a cert without a
  ``letsencrypt updated <cert>`` handler, an OpenDev variable certbridge replaced, or a role of
  the pulse shadowed by another of the same name; then runs acme_request;
- it runs the certbridge module, either as the plain binary module (``letsencrypt_module_mode:
  transfer``) or, with ``installed``, through the pipelinable ``certbridge_exec`` module that
  hands the same arguments to the binary the setup role installed;
- ``finalize`` notifies each updated certificate's handler itself; ``acknowledge`` (after the
  handlers ran) records the acknowledgement, prunes when asked, and fails the host for
  everything that was not finished.

The decisions themselves are plain functions in module_utils/certbridge_pulse.py.
"""

from __future__ import annotations

import os
import posixpath
import sys
import time

import yaml

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

try:  # installed as the certbridge.acme collection
    from ansible_collections.certbridge.acme.plugins.module_utils import certbridge_budget as budget
    from ansible_collections.certbridge.acme.plugins.module_utils import certbridge_pulse as pulse
except ImportError:  # a checkout: plugins/ is on ansible.cfg's plugin paths, not a collection
    import importlib.util

    def _load(name):
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "module_utils", name + ".py"))
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return loaded

    pulse = _load("certbridge_pulse")
    budget = _load("certbridge_budget")

DOCUMENTATION = r"""
short_description: Run one step of the certbridge pulse on one host
description:
  - Used by the certbridge roles and the pulse playbook; not meant for playbooks of their own.
    The module's options are built from the role's variables (letsencrypt_*); any other option
    given to the task is passed to the module as it is.
  - finalize and acknowledge read the pulse round of play 1 (hostvars of localhost,
    letsencrypt_round), the DNS host's letsencrypt_publish and this host's
    letsencrypt_request and letsencrypt_finalize.
options:
  step:
    description: request (acme_request), round, finalize or acknowledge (acme_finalize), check, certcheck.
    type: str
    choices: [request, round, finalize, acknowledge, check, certcheck]
    required: true
  dns_hosts:
    description: request and round - the hosts letsencrypt_dns_group matches (request reads the
      signing zones of that single host for acme_request's cname_check; without it, the members
      of the group of that name).
    type: list
  hosts:
    description: certcheck only - the hosts letsencrypt_group matches.
    type: list
  admitted:
    description: request only - order the new certificates the round's rate budget admitted
      for this host (the second request of a pulse that plans Let's Encrypt's limits).
    type: bool
  merge:
    description: round only - rebuild the round after the admitted orders, keeping its plan.
    type: bool
"""

display = Display()
MODULE_MODES = ("transfer", "installed")
DEFAULT_MODULE_DIR = "/usr/local/lib/certbridge"
CONTROL_ARGS = frozenset(("step", "dns_hosts", "hosts", "admitted", "merge"))
STEPS = ("request", "round", "finalize", "acknowledge", "check", "certcheck")
# The roles the pulse plays after play 1, under their checkout names.
LATER_ROLES = ("letsencrypt-install-txt-record", "letsencrypt-install-http-token", "letsencrypt-create-certs")
_UNSET = object()


def _role_spec(role_path):
    """The options of the role at role_path: its `main` entry point, or the only entry of a role
    without tasks (letsencrypt-common's `shared`); {} when it has none."""
    for ext in (".yml", ".yaml"):
        path = os.path.join(role_path, "meta", "argument_specs" + ext)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
            entries = data.get("argument_specs") or {}
            main = entries.get("main") or next(iter(entries.values()), None) or {}
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
            # Only names with Jinja are templated: a fleet's play has a handler per cert, and
            # every host's finalize asks.
            if name and ("{{" in name or "{%" in name):
                try:
                    name = templar.template(name)
                except Exception:  # an untemplatable name cannot be notified by name either
                    pass
            if name:
                known.add(str(name))
            for topic in handler.listen or []:
                known.add(str(topic))
    return known


def _handler_file(path):
    """(topics, imports) of one handlers file. Every host's play-1 task asks, and a fleet's file
    has a handler per cert: parsed once per run and kept in the run's local temp dir (keyed by
    the file's identity), read back as JSON by the other workers - parsing it in every worker
    made play 1 grow with hosts x handlers."""
    import hashlib
    import json
    import tempfile

    from ansible import constants as C

    st = os.stat(path)
    key = hashlib.sha256(("%s|%d|%d|%d" % (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns))
                         .encode()).hexdigest()[:32]
    cache_dir = getattr(C, "DEFAULT_LOCAL_TMP", None)
    cache = os.path.join(cache_dir, "certbridge-handlers-%s.json" % key) if cache_dir else None
    if cache:
        try:
            with open(cache, encoding="utf-8") as handle:
                data = json.load(handle)
            return data["topics"], data["imports"]
        except (OSError, ValueError, KeyError):
            pass
    with open(path, encoding="utf-8") as handle:
        entries = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or []
    topics, imports = pulse.handler_topics(entries), pulse.handler_imports(entries)
    if cache:
        try:  # written whole, then renamed: a worker reads a complete file or none
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".certbridge-handlers-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"topics": topics, "imports": imports}, handle)
            os.replace(tmp, cache)
        except OSError:  # a cache only
            pass
    return topics, imports


def _run_cache(name):
    """A file of this run's local temp dir (one per ansible-playbook process, shared by its
    forked workers), or None."""
    from ansible import constants as C

    cache_dir = getattr(C, "DEFAULT_LOCAL_TMP", None)
    return os.path.join(cache_dir, name) if cache_dir else None


def _read_run_cache(name):
    import json

    path = _run_cache(name)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_run_cache(name, data):
    """Written whole, then renamed: a worker reads a complete file or none. A cache only."""
    import json
    import tempfile

    path = _run_cache(name)
    if not path:
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".certbridge-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass


# The round as the last round step built it. Every play-3 host needs it, and reading it
# through hostvars['localhost'] costs each worker time in proportion to the round's size
# (Ansible templates the whole fact on access: ~0.5 s per host at 1,000 records), so the
# round grew with hosts x hosts; the file is read in a few ms.
ROUND_CACHE = "certbridge-round.json"


def _extra_var_names():
    """Names given with -e, so a letsencrypt_force from inventory can be told apart."""
    try:
        from ansible.parsing.dataloader import DataLoader
        from ansible.utils.vars import load_extra_vars

        return set(load_extra_vars(DataLoader()).keys())
    except Exception:
        return set()


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
        if step not in STEPS:
            raise AnsibleActionFail("step must be one of %s; got %r" % (", ".join(STEPS), step))
        if step == "round":
            return self._round(result, args, task_vars)
        if step == "check":
            return self._check(result, task_vars)
        role_vars = self._role_var = self._role_vars(task_vars)
        invalid = self._validate_role_vars(role_vars)
        if invalid:
            result.update(failed=True, msg=invalid)
            return result
        if step == "certcheck":
            return self._certcheck(result, args, role_vars, task_vars)
        # Options given to the task win over those built from the role's variables.
        module_args = pulse.module_args(step, role_vars)
        module_args.update((k, v) for k, v in args.items() if k not in CONTROL_ARGS)

        if step == "request":
            if "cname_check" not in module_args and not module_args.get("self_sign"):
                check = self._cname_check(args, role_vars, task_vars)
                if check:
                    module_args["cname_check"] = check
            return self._request(result, module_args, task_vars)
        if step == "finalize":
            return self._finalize(result, module_args, task_vars)
        return self._acknowledge(result, module_args, task_vars)

    # -- steps -------------------------------------------------------------------------------

    def _request(self, result, module_args, task_vars):
        """Refuse what would fail later (before any order), then run acme_request. A CA error
        does not fail the task (the host stays in the pulse so its other certs finish); play 3
        fails the host for it. ``stop_host`` marks what must fail the host here."""
        problems = pulse.replaced_variables(task_vars)
        problems.extend(self._shadowed_roles())
        play = self._task.get_play()
        if play is not None and play.serial and (set(task_vars.get("ansible_play_batch") or [])
                                                 != set(task_vars.get("ansible_play_hosts_all") or [])):
            problems.append(
                "play-level serial runs this play in batches, but the pulse's round needs every host's "
                "result before anything is published: remove serial from the play that runs "
                "letsencrypt-request-certs (forks bounds the parallelism); nothing was ordered")
        missing = self._missing_handlers(module_args.get("certs"), task_vars)
        if missing:
            problems.append(
                "define a handler (or a listen topic) for each certificate of this host in "
                "letsencrypt_handlers_file; missing: " + ", ".join(repr(m) for m in missing))
            result["missing_handlers"] = missing
        planned = budget.enabled(self._role_var("letsencrypt_rate_budget", "auto"), module_args.get("directory"))
        if planned:
            problems.extend(self._budget_problems())
        problems.extend(pulse.webroot_hosts_problems(
            module_args.get("certs"), module_args.get("challenge"), lambda p: self._inventory_hosts(p)[0]))
        if not problems:
            problems.extend(self._unpublishable(module_args, task_vars))
        if problems:
            result.update(stop_host=True, request_failed=True, msg="; ".join(problems))
            return result
        if planned:
            # New certificates wait for the round's plan (certbridge_budget); the second
            # request (admitted) orders those it admitted for this host.
            round_ = self._round_fact(task_vars) if self._task.args.get("admitted") else {}
            host = task_vars.get("inventory_hostname")
            module_args["admit"] = list((round_.get("admit") or {}).get(host) or [])
            deferred = (round_.get("deferred") or {}).get(host)
            if deferred:
                result["deferred"] = deferred
        module_result = self._run_module("acme_request", module_args, task_vars)
        result.update(module_result)
        if module_result.get("failed"):
            result["request_failed"] = True
        result["stop_host"] = False
        return result

    def _inventory_hosts(self, pattern):
        """(every host, hosts inside --limit) the pattern matches; ([], []) without an inventory."""
        try:
            inventory = self._task._variable_manager._inventory
            everywhere = [h.name for h in inventory.get_hosts(pattern, ignore_limits=True, ignore_restrictions=True)]
            limited = [h.name for h in inventory.get_hosts(pattern, ignore_restrictions=True)]
        except Exception:  # no inventory at hand (a play of one's own)
            return [], []
        return everywhere, limited

    def _webroot_targets(self, hostvars, hosts):
        """(host -> cert -> the hosts its webroot_hosts pattern matches, each such host -> the
        letsencrypt_webroot its inventory sets), for build_round."""
        out, served = {}, {}
        for host in hosts:
            certs = pulse.plain(pulse._get(hostvars[host], "letsencrypt_certs", {})) or {}
            if not isinstance(certs, dict):
                continue
            for cert, pattern in pulse.webroot_patterns(certs).items():
                targets = out.setdefault(host, {})[cert] = self._inventory_hosts(pattern)[0]
                for target in targets:
                    own = pulse._get(hostvars[target], "letsencrypt_webroot", "") if target in hostvars else ""
                    if own:
                        served[target] = str(own)
        return out, served

    def _cname_check(self, args, var, task_vars):
        """acme_request's cname_check from the DNS host's inventory variables (see
        certbridge_pulse.cname_check)."""
        if "dns_hosts" in args:
            dns_hosts = list(args.get("dns_hosts") or [])
        else:
            dns_hosts = list((task_vars.get("groups") or {}).get(var("letsencrypt_dns_group") or "") or [])
        try:
            dns_vars = task_vars["hostvars"][dns_hosts[0]] if len(dns_hosts) == 1 else {}
        except Exception:  # no hostvars for it: nothing to check against
            return None

        def dns_var(name, default):
            try:
                return self._templar.template(dns_vars[name]) if name in dns_vars else default
            except Exception:  # an undefined value counts as unset
                return default

        return pulse.cname_check(dns_hosts, dns_var, var("letsencrypt_request_cname_check", True))

    def _round(self, result, args, task_vars):
        """The pulse round, once, from every play-1 host's result (stored on localhost); with
        merge, rebuilt after the admitted orders, keeping the first round's hosts and plan."""
        hostvars = task_vars.get("hostvars") or {}
        dns_group = self._templar.template(task_vars.get("letsencrypt_dns_group", "adns"))
        cap = self._templar.template(task_vars.get("letsencrypt_max_values_per_name", 7))
        first = self._round_fact(task_vars) if args.get("merge") else {}
        hosts = list(first.get("hosts") or []) if first else list(task_vars.get("ansible_play_hosts") or [])
        targets, served = self._webroot_targets(hostvars, hosts)
        try:
            round_ = pulse.build_round(hostvars, hosts, dns_group, list(args.get("dns_hosts") or []),
                                       _extra_var_names(), max_values_per_name=cap,
                                       webroot_targets=targets, served_webroots=served)
            plan = ({k: first.get(k) or {} for k in ("admit", "deferred")} if first
                    else self._rate_plan(hostvars, hosts, task_vars))
        except ValueError as err:
            raise AnsibleActionFail(str(err))
        round_.update(plan, admit_hosts=sorted(plan["admit"]))
        _write_run_cache(ROUND_CACHE, round_)
        self._round_metrics(round_, task_vars)
        if not first:
            for warning in round_["warnings"]:
                display.warning(warning)
            for line in budget.summary(plan):
                display.display(line)
        result.update(changed=False, ansible_facts={"letsencrypt_round": round_})
        return result

    def _round_metrics(self, round_, task_vars):
        """letsencrypt_round_metrics_file: the certs this pulse did not order (rate budget,
        values cap) and when they fit, written here on the controller, which decided them: a
        host-side file would cost a module call per host with a deferral at every pulse of a
        rollout."""
        path = self._templar.template(task_vars.get("letsencrypt_round_metrics_file", ""))
        if not path:
            return
        text = budget.deferral_metrics(round_.get("deferred"), round_.get("crowded"), int(time.time()))
        try:
            budget.write_textfile(str(path), text)
        except OSError as err:
            raise AnsibleActionFail("cannot write letsencrypt_round_metrics_file %s: %s" % (path, err))

    def _rate_plan(self, hostvars, hosts, task_vars):
        """Admit or defer the new certificates play 1 held (certbridge_budget.plan)."""
        results = {}
        for host in hosts:
            found = pulse.plain(pulse._get(hostvars[host], "letsencrypt_request", None))
            if isinstance(found, dict) and not found.get("unreachable"):
                results[host] = found
        if not any(isinstance(d, dict) and d.get("held")
                   for r in results.values() for d in (r.get("certs") or {}).values()):
            return {"admit": {}, "deferred": {}}

        def var(name, default=None):
            return self._templar.template(task_vars[name]) if name in task_vars else default

        limits = budget.budgets(var)
        registered = budget.registered_domain_function()

        def certs_of(host):
            certs = pulse.plain(pulse._get(hostvars[host], "letsencrypt_certs", {})) or {}
            return {str(cert): pulse.cert_names(spec) for cert, spec in certs.items()}

        def egress_of(host):
            return str(pulse._get(hostvars[host], "letsencrypt_rate_egress", "") or host)

        now = int(time.time())
        requests, history = budget.collect(results, certs_of, egress_of, registered, now)
        return budget.plan(requests, history, limits, now)

    def _unpublishable(self, module_args, task_vars):
        """A --limit that leaves out the DNS host, or a host of an http-01 cert's webroot_hosts:
        orders made now would have nobody to publish their values or write their tokens. A
        check-mode acme_request (no order, no write) says whether this host would order such a
        cert; if so it stops here with the command that takes those hosts in."""
        if not task_vars.get("ansible_limit"):
            return []
        group = str(self._templar.template(task_vars.get("letsencrypt_dns_group", "adns")))
        everywhere, limited = self._inventory_hosts(group)
        dns_outside = [h for h in everywhere if h not in limited]
        certs = module_args.get("certs") or {}
        http_outside = {}
        for cert, pattern in pulse.webroot_patterns(certs).items():
            every, inside = self._inventory_hosts(pattern)
            if any(h not in inside for h in every):
                http_outside[cert] = [h for h in every if h not in inside]
        if not dns_outside and not http_outside:
            return []
        check_mode, self._task.check_mode = self._task.check_mode, True
        try:
            would = self._run_module("acme_request", dict(module_args), task_vars)
        finally:
            self._task.check_mode = check_mode
        ordering = pulse.unpublished_orders(would)
        problems = []
        dns_certs = [c for c in ordering if pulse.cert_challenge(certs.get(c), module_args.get("challenge")) != pulse.HTTP_01]
        if dns_outside and dns_certs:
            problems.append(
                "%s (letsencrypt_dns_group %s) is outside --limit %s: the dns-01 values of %s would have "
                "nobody to publish them, so nothing was ordered. Run: %s"
                % (", ".join(dns_outside), group, task_vars.get("ansible_limit"), ", ".join(dns_certs),
                   pulse.limit_command(sys.argv, dns_outside)))
        http_certs = [c for c in ordering if c in http_outside]
        if http_certs:
            outside = sorted({h for c in http_certs for h in http_outside[c]})
            problems.append(
                "%s (webroot_hosts of %s) outside --limit %s: the http-01 tokens would have nobody to "
                "write them, so nothing was ordered. Run: %s"
                % (", ".join(outside), ", ".join(http_certs), task_vars.get("ansible_limit"),
                   pulse.limit_command(sys.argv, outside)))
        return problems

    def _round_fact(self, task_vars):
        """The round play 1 stored on localhost ({} when there is none); from this run's cache
        file when there is one."""
        cached = _read_run_cache(ROUND_CACHE)
        if isinstance(cached, dict):
            return cached
        try:
            return pulse.plain(task_vars["hostvars"]["localhost"]["letsencrypt_round"]) or {}
        except Exception:  # not built: play 1 did not run in this playbook
            return {}

    def _budget_problems(self):
        """What stops a pulse that plans the rate budget, before any order."""
        try:
            budget.budgets(self._role_var)
        except ValueError as err:
            return [str(err)]
        import importlib.util

        return [] if importlib.util.find_spec("publicsuffixlist") else [budget.PSL_MISSING]

    def _check(self, result, task_vars):
        """The last play: fail the pulse when play 1 or play 3 ran no certbridge task."""
        hostvars = task_vars.get("hostvars") or {}
        try:
            round_ = pulse.plain(hostvars["localhost"]["letsencrypt_round"])
        except Exception:  # never set: play 1 ran no certbridge step
            round_ = None
        results = {}
        for host in (round_ or {}).get("finalize") or []:
            try:
                results[host] = pulse.plain(hostvars[host]["letsencrypt_finalize"])
            except Exception:  # not registered there
                results[host] = None
        problem = pulse.pulse_check(round_, results)
        result.update(changed=False, failed=bool(problem), msg=problem or "the pulse ran certbridge's plays")
        return result

    def _certcheck(self, result, args, var, task_vars):
        """OpenDev's certcheck lines for every host letsencrypt_group matches (never an empty
        list for a pattern that matches nothing)."""
        hosts = list(args.get("hosts") or [])
        group = var("letsencrypt_group", "letsencrypt")
        if not hosts:
            result.update(failed=True, msg="letsencrypt_group %r matches no host: set it to the group or "
                          "host pattern of the pulse's play 1 (e.g. letsencrypt:!disabled)" % group)
            return result
        hostvars = task_vars.get("hostvars") or {}
        certs_of_hosts = []
        for host in sorted(hosts):
            try:
                certs_of_hosts.append(pulse.plain(hostvars[host]["letsencrypt_certs"]) or {})
            except KeyError:  # a host without certificates
                pass
        result.update(changed=False, lines=pulse.certcheck_lines(certs_of_hosts), hosts=sorted(hosts))
        return result

    def _finalize(self, result, module_args, task_vars):
        """Stop or check handlers, run acme_finalize, notify one handler per updated cert."""
        view = self._view(task_vars)
        result["round"] = view["round_id"]
        if view["stop"]:
            result.update(failed=True, msg=view["stop"])
            return result
        only = view["finalize"]
        handlers_for = only + [c for c in view["unacked"] if c not in only]
        wanted = [pulse.HANDLER_PREFIX + cert for cert in handlers_for]
        if not wanted:
            result.update(changed=False, updated=[], msg="nothing to finalize")
            return result
        play = self._task.get_play()
        known = _play_handler_names(play, self._templar) if play is not None else set()
        missing = pulse.missing_handlers(handlers_for, known)
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
        self._remove_own_tokens(result, module_result, view, task_vars)
        if self._task.check_mode:
            renotify = [c for c in handlers_for if c not in only]
            result["msg"] = "would finalize %s; would notify %s" % (
                ", ".join(only) or "nothing", ", ".join(renotify) or "nothing more")
        elif updated:
            result["changed"] = True
            # Ansible notifies what a changed result names here; a task-level `notify` could
            # not depend on this task's own result.
            result["_ansible_notify"] = pulse.notifications(updated, known)
            # For the common topic's handler: which certs of this host changed in this pulse.
            result["ansible_facts"] = {"letsencrypt_updated_certs": updated}
        return result

    def _remove_own_tokens(self, result, module_result, view, task_vars):
        """Removes the tokens of this host's finished orders that this host served itself, inside
        the finalize step: a host play 3 fails (a CA refusal) joins no later play, yet keeps no
        token. Tokens served by other hosts (webroot_hosts) go in the pulse's cleanup play."""
        me = task_vars.get("inventory_hostname")
        retired = pulse.http_retired(view["round"], me, {me: module_result.get("acme_http_done")})
        if not retired or self._task.check_mode:
            return
        var = self._role_var
        args = {"tokens": [], "retired": retired, "keep_seconds": var("letsencrypt_http_keep_seconds", 3600)}
        if var("letsencrypt_http_state_dir"):
            args["state_dir"] = var("letsencrypt_http_state_dir")
        removed = self._run_module("acme_http_publish", args, task_vars)
        if removed.get("failed"):
            result["http_cleanup_failure"] = str(removed.get("msg") or "acme_http_publish failed")
        else:
            result["http_removed"] = removed.get("removed") or []

    def _acknowledge(self, result, module_args, task_vars):
        """Acknowledge the updates whose handlers ran, prune, then fail for what is unfinished."""
        result["changed"] = False
        finalized = pulse.plain(task_vars.get("letsencrypt_finalize")) or {}
        ack = module_args.get("ack", [str(c) for c in finalized.get("updated") or []])
        if ack and not self._task.check_mode:
            acked = self._run_module("acme_finalize", dict(module_args, only=[], ack=ack), task_vars)
            if acked.get("failed"):
                result.update(failed=True, msg="acme_finalize (acknowledge): %s" % acked.get("msg"))
                return result
            result["acknowledged"] = ack
        if pulse.truthy(self._role_var("letsencrypt_prune", False)):
            declared = pulse.cert_dirs(module_args.get("certs"))
            removed = self._prune(module_args.get("cert_root"), declared, task_vars)
            if isinstance(removed, str):
                result.update(failed=True, msg=removed)
                return result
            result["pruned"] = removed
            result["changed"] = bool(removed)
        problems = pulse.unfinished(self._view(task_vars), finalized)
        if problems:
            result.update(failed=True, msg="; ".join(problems))
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _view(self, task_vars):
        """This host's part of the round (see certbridge_pulse.host_view)."""
        hostvars = task_vars.get("hostvars") or {}
        round_ = self._round_fact(task_vars)
        publish = {}
        dns_hosts = list(round_.get("dns_hosts") or [])
        if dns_hosts:
            # Its size grows with the round's values too: read once through hostvars per run.
            name = "certbridge-publish-%s-%s.json" % (round_.get("id"), dns_hosts[0])
            publish = _read_run_cache(name)
            if not isinstance(publish, dict):
                try:
                    publish = pulse.plain(hostvars[dns_hosts[0]]["letsencrypt_publish"]) or {}
                    _write_run_cache(name, publish)
                except Exception:  # not set: play 2 did not run on it (--limit)
                    publish = {}
        http_publish = {}
        me = task_vars.get("inventory_hostname")
        for target, tokens in (round_.get("http_tokens") or {}).items():
            # Only the hosts that write this host's tokens: reading every target's result
            # from every host would grow with hosts x targets.
            if not any(isinstance(t, dict) and t.get("host") == me for t in tokens or []):
                continue
            try:
                http_publish[target] = pulse.plain(hostvars[target]["letsencrypt_http_publish"])
            except Exception:  # not set: the publish play did not run there
                http_publish[target] = None
        request = pulse.plain(task_vars.get("letsencrypt_request")) or {}
        view = pulse.host_view(task_vars.get("inventory_hostname"), round_, request, publish, http_publish)
        view["round_id"] = round_.get("id")
        view["round"] = round_
        return view

    def _handlers_file(self, task_vars):
        """Where letsencrypt-create-certs imports its handlers from (None: not found)."""
        raw = task_vars.get("letsencrypt_handlers_file", "site.yml")
        path = str(self._templar.template(raw))
        if os.path.isabs(path):
            return path if os.path.exists(path) else None
        role = getattr(self._task, "_role", None)
        roles_dir = os.path.dirname(role._role_path) if role is not None else ""
        for name in ("letsencrypt-create-certs", "letsencrypt_create_certs"):
            candidate = os.path.join(roles_dir, name, "handlers", path)
            if os.path.exists(candidate):
                return candidate
        return None

    def _missing_handlers(self, certs, task_vars):
        """Handler names play 3 would notify for these certs and that the handlers file lacks."""
        if not certs or not pulse.truthy(task_vars.get("letsencrypt_handler_check", True)):
            return []
        path = self._handlers_file(task_vars)
        if path is None:
            display.warning("letsencrypt_handlers_file %r not found from play 1: handlers are checked in "
                            "play 3 only" % task_vars.get("letsencrypt_handlers_file", "site.yml"))
            return []
        known, seen, todo = [], set(), [path]
        while todo:
            current = todo.pop()
            if current in seen or not os.path.exists(current):
                continue
            seen.add(current)
            topics, imports = _handler_file(current)
            for topic in topics:
                if "{{" not in topic and "{%" not in topic:
                    known.append(topic)
                    continue
                try:
                    known.append(str(self._templar.template(topic)))
                except Exception:  # an untemplatable name cannot be notified by name either
                    known.append(topic)
            todo.extend(os.path.join(os.path.dirname(current), str(self._templar.template(f)))
                        for f in imports)
        return pulse.missing_handlers(certs, known)

    def _shadowed_roles(self):
        """A later role of the pulse that Ansible would load from elsewhere (a roles/ directory
        next to the playbook, an earlier roles_path entry) instead of next to this one."""
        role = getattr(self._task, "_role", None)
        if role is None or getattr(role, "_role_collection", None):
            return []  # a collection's roles are named by FQCN: nothing can shadow them
        ours = os.path.dirname(os.path.realpath(role._role_path))
        from ansible import constants as C

        search = [os.path.join(self._loader.get_basedir(), "roles")] + list(C.DEFAULT_ROLES_PATH or [])
        out = []
        for name in LATER_ROLES:
            for base in search:
                candidate = os.path.join(base, name)
                if os.path.isdir(candidate):
                    if os.path.realpath(candidate) != os.path.join(ours, name):
                        out.append("the role %s at %s shadows certbridge's (%s): remove or rename it"
                                   % (name, candidate, os.path.join(ours, name)))
                    break
        return out

    def _role_vars(self, task_vars):
        """The role's variables (those of its argument spec), templated once, as a lookup."""
        role = getattr(self._task, "_role", None)
        self._spec = {}
        if role is not None:
            # The role's dependencies first (letsencrypt-common: the variables shared by plays 1 and 3).
            for dep in role.get_all_dependencies():
                self._spec.update(_role_spec(dep._role_path))
            self._spec.update(_role_spec(role._role_path))
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
