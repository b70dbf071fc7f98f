#!/usr/bin/python
# certbridge_exec: run a certbridge binary installed on the host, as one pipelinable task.
# Copyright: certbridge developers
# Apache License 2.0 (the license of the certbridge workspace, Cargo.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: certbridge_exec
short_description: Run a certbridge module binary installed on the host
description:
  - Runs one of certbridge's module binaries (C(acme_request), C(acme_finalize),
    C(acme_txt_publish), C(zone_render)) that the C(letsencrypt-setup) role installed on the
    host (C(letsencrypt_module_mode=installed)), handing it O(args) over the binary-module
    protocol (a JSON object of the arguments plus Ansible's check mode, diff, verbosity and
    C(no_log) flags), and returns the binary's result unchanged.
  - Binary modules are never pipelined, so over SSH each binary task costs a temporary
    directory, a file transfer and a clean-up. This module is small Python that Ansible can
    pipeline (one exec over SSH), so a task costs what a pipelined Python module costs.
  - The pulse roles call it themselves when C(letsencrypt_module_mode=installed); tasks rarely
    need it directly.
  - The arguments reach the binary on a pipe (its argument file is C(/dev/stdin)); where
    C(/dev/stdin) cannot be opened, a temporary file of mode 0600 is used and removed after
    the call.
  - The result, C(invocation) included, is the binary's own, in which the binary has replaced
    its secret options (EAB HMAC key, TSIG secret) by C(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER).
    This module adds no C(invocation) of its own, so O(args) never appears in output.
  - Every other key of the result is the binary's; see its own documentation (for example
    C(ansible-doc acme_request)).
author: certbridge developers
version_added: "1.0.0"
options:
  binary:
    description:
      - Absolute path of the installed binary on the host, for example
        V(/usr/local/lib/certbridge/acme_request) (C(letsencrypt_module_dir) of the
        C(letsencrypt-setup) role, then the module name).
    type: path
    required: true
  args:
    description:
      - The binary's module arguments, exactly as the task would pass them to the binary
        module (see C(ansible-doc) of that module). May carry secrets, so this option is
        never logged.
    type: dict
    required: true
notes:
  - Supports check mode and diff mode when the binary does (all four certbridge binaries do).
  - Fails naming the binary when it is missing or not executable, prints anything but one
    JSON object, or is killed by a signal.
"""

EXAMPLES = r"""
- name: Render a zone with the installed zone_render binary
  certbridge_exec:
    binary: /usr/local/lib/certbridge/zone_render
    args:
      path: /var/lib/bind/acme.example.net.db
      origin: acme.example.net
      ns: [ns1.example.net.]
      records:
        - {name: web01.example.org, type: TXT, value: "gfj9Xq...Rg85nM"}
  register: zone

- name: Decide and start orders, as the request role does in installed mode
  certbridge_exec:
    binary: "{{ letsencrypt_module_dir }}/acme_request"
    args:
      certs: "{{ letsencrypt_certs }}"
      cert_root: "{{ letsencrypt_cert_root }}"
      directory: https://acme-v02.api.letsencrypt.org/directory
"""

RETURN = r"""
changed:
  description: The binary's C(changed).
  returned: always
  type: bool
msg:
  description: The binary's message; on a failure of this module, what went wrong and the fix.
  returned: failure
  type: str
  sample: >-
    certbridge_exec: /usr/local/lib/certbridge/acme_request does not exist: run the
    letsencrypt-setup role with letsencrypt_module_mode: installed
invocation:
  description: The binary's invocation (its arguments with secret options redacted).
  returned: when the binary returns it
  type: dict
rc:
  description: The binary's exit status (negative - the signal) when this module fails because
    the binary printed no JSON object.
  returned: failure of this module
  type: int
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.parameters import remove_values

FIX = "run the letsencrypt-setup role with letsencrypt_module_mode: installed"
# How much of a misbehaving binary's output a failure message quotes.
SNIPPET = 600


def internal_keys(module, binary):
    """The `_ansible_*` keys the certbridge protocol reads, from this module's own state."""
    return {
        "_ansible_check_mode": module.check_mode,
        "_ansible_diff": module._diff,
        "_ansible_verbosity": module._verbosity,
        "_ansible_no_log": module.no_log,
        "_ansible_module_name": os.path.basename(binary),
    }


def check_binary(binary):
    """None when `binary` can be run, else why not (with the fix)."""
    if not os.path.isabs(binary):
        return "binary must be an absolute path on the host, not %r" % binary
    try:
        st = os.stat(binary)
    except FileNotFoundError:
        return "%s does not exist: %s" % (binary, FIX)
    except OSError as e:
        return "cannot stat %s (%s): %s" % (binary, e.strerror, FIX)
    if not os.path.isfile(binary):
        return "%s is not a regular file: %s" % (binary, FIX)
    if not os.access(binary, os.X_OK):
        return "%s is not executable (mode %04o): %s" % (binary, st.st_mode & 0o7777, FIX)
    return None


def stdin_usable():
    """Whether a child can open its stdin pipe by path (/dev/stdin -> /proc/self/fd/0)."""
    return os.path.isdir("/proc/self/fd") and os.path.exists("/dev/stdin")


def run_binary(binary, payload, via_stdin):
    """Runs the binary on the JSON payload; returns (exit status, stdout, stderr)."""
    if via_stdin:
        proc = subprocess.run([binary, "/dev/stdin"], input=payload, capture_output=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    fd, path = tempfile.mkstemp(prefix="certbridge-args.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        proc = subprocess.run([binary, path], stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    finally:
        os.unlink(path)


def parse_reply(stdout):
    """The binary's one JSON object, or None."""
    try:
        reply = json.loads(stdout.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def emit(result):
    """Prints the result as it is. AnsibleModule.exit_json would mask every leaf value of the
    no_log `args` (paths, names, numbers) wherever it appears in the binary's result."""
    print(json.dumps(result))
    sys.exit(1 if result.get("failed") else 0)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            binary=dict(type="path", required=True),
            args=dict(type="dict", required=True, no_log=True),
        ),
        supports_check_mode=True,
    )
    binary = module.params["binary"]

    def fail(msg, **extra):
        emit(dict(extra, failed=True, changed=False, msg="certbridge_exec: " + msg))

    # What the binary printed may be quoted in a message: scrub the values of `args` from it.
    # Only values of 6 characters or more: a secret is longer, and masking every short value
    # ("A", "60") would mangle unrelated text such as the binary's path.
    secrets = {v for v in module.no_log_values if len(str(v)) >= 6}

    def quoted(text):
        return remove_values(text, secrets)

    problem = check_binary(binary)
    if problem:
        fail(problem)
    args = dict(module.params["args"])
    args.update(internal_keys(module, binary))
    payload = json.dumps(args).encode("utf-8")

    via_stdin = stdin_usable()
    try:
        rc, stdout, stderr = run_binary(binary, payload, via_stdin)
        reply = parse_reply(stdout)
        if via_stdin and reply is not None and reply.get("failed") and str(reply.get("msg", "")).startswith(
            "cannot read the arguments file /dev/stdin"
        ):
            # The binary read nothing, so it did nothing: run it again from a file.
            rc, stdout, stderr = run_binary(binary, payload, False)
            reply = parse_reply(stdout)
    except OSError as e:
        fail("cannot run %s (%s): %s" % (binary, e.strerror or e, FIX))

    if reply is not None:
        emit(reply)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "signal %d" % -rc
        fail("%s was killed by %s before it replied%s" % (
            binary, name, " (out of memory?)" if -rc == signal.SIGKILL else ""), rc=rc)
    out = stdout.decode("utf-8", errors="replace").strip()
    err = stderr.decode("utf-8", errors="replace").strip()
    err_tail = "; stderr: " + quoted(err[-SNIPPET:]) if err else ""
    if not out:
        fail("%s printed nothing (exit status %d)%s" % (binary, rc, err_tail), rc=rc)
    fail("%s printed no JSON object (exit status %d; is it a certbridge module binary?): %s%s" % (
        binary, rc, quoted(out[:SNIPPET]), err_tail), rc=rc)


if __name__ == "__main__":
    main()
