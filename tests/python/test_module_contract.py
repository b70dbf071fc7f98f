# certbridge: each module's documented options (modules/<name>.yml) equal the options its binary accepts.
"""The binaries reject unknown options and list the valid ones (certbridge-core's protocol):
a probe with an option no module has returns that list, which must equal the documentation's
options, both ways. Runs the release binaries of `make modules` (or CERTBRIDGE_MODULES_DIR)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["acme_request", "acme_txt_publish", "acme_http_publish", "acme_finalize", "acme_group", "zone_render"]
PROBE = "certbridge_contract_probe"


def accepted_options(name, tmp_path):
    binary = Path(os.environ.get("CERTBRIDGE_MODULES_DIR", ROOT / "modules")) / name
    assert binary.is_file(), "%s is missing: run 'make modules'" % binary
    args = tmp_path / "args.json"
    args.write_text(json.dumps({PROBE: 1}))
    out = subprocess.run([str(binary), str(args)], capture_output=True, text=True, timeout=60)
    reply = json.loads(out.stdout)
    assert reply.get("failed"), "%s accepted the unknown option %s: %s" % (name, PROBE, reply)
    m = re.search(r"unsupported option `%s`; valid options: (.*)$" % PROBE, reply["msg"])
    assert m, "%s did not list its options: %s" % (name, reply["msg"])
    return {o.strip() for o in m.group(1).split(",") if o.strip()}


def fragment_options(fragment):
    """Options of a shared documentation fragment (plugins/doc_fragments/<name>.py)."""
    namespace = {}
    exec((ROOT / "plugins" / "doc_fragments" / (fragment + ".py")).read_text(), namespace)
    return set((yaml.safe_load(namespace["ModuleDocFragment"].DOCUMENTATION).get("options") or {}).keys())


def documented_options(name):
    doc = yaml.safe_load((ROOT / "modules" / (name + ".yml")).read_text())["DOCUMENTATION"]
    options = set((doc.get("options") or {}).keys())
    for fragment in doc.get("extends_documentation_fragment") or []:
        options |= fragment_options(fragment)
    return options


def test_the_ca_directory_default_is_documented_once():
    """Let's Encrypt's production URL: in the shared fragment, in no module's own page."""
    url = "https://acme-v02.api.letsencrypt.org/directory"
    for name in MODULES:
        assert url not in (ROOT / "modules" / (name + ".yml")).read_text(), name
    assert "directory" in fragment_options("certbridge_ca")


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_equal_accepted_options(name, tmp_path):
    accepted = accepted_options(name, tmp_path)
    documented = documented_options(name)
    assert documented - accepted == set(), "%s: documented but refused by the binary" % name
    assert accepted - documented == set(), "%s: accepted by the binary but not documented" % name
