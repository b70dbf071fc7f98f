#!/usr/bin/env python3
# certbridge exec backend for Infoblox WAPI: TXT records through the `record:txt` object.
"""Use as acme_txt_publish's `method: exec` command (protocol: docs/dns-backends.md).

Environment (pass it with the zone's `env` option; nothing else reaches this script):
  INFOBLOX_URL       e.g. https://gm.example.org/wapi/v2.12  (required)
  INFOBLOX_USER      WAPI user (required)
  INFOBLOX_PASSWORD  its password (required; never printed)
  INFOBLOX_VIEW      DNS view (default: the WAPI default view)
  INFOBLOX_CA_FILE   CA bundle for the grid master's certificate (default: the system's)

Python 3 standard library only. Tested against a stand-in of the WAPI calls it makes
(tests/dns_api_standin.py), since no Infoblox grid can run in certbridge's tests."""

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

VERSION = 1


def fail(msg):
    print("infoblox-wapi: " + msg, file=sys.stderr)
    sys.exit(1)


def env(name, default=None):
    v = os.environ.get(name, default)
    if v is None:
        fail("%s is not set (add it to the zone's `env`)" % name)
    return v


class Wapi:
    def __init__(self):
        self.base = env("INFOBLOX_URL").rstrip("/") + "/"
        token = "%s:%s" % (env("INFOBLOX_USER"), env("INFOBLOX_PASSWORD"))
        self.auth = "Basic " + base64.b64encode(token.encode()).decode()
        self.view = os.environ.get("INFOBLOX_VIEW")
        ca = os.environ.get("INFOBLOX_CA_FILE")
        self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()

    def call(self, method, path, query=None, body=None):
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            fail("%s %s: HTTP %d: %s" % (method, path, e.code, detail))
        except (urllib.error.URLError, OSError) as e:
            fail("%s %s: %s" % (method, path, e))

    def records(self, zone):
        q = {"zone": zone, "_return_fields": "name,text,ttl", "_max_results": "100000"}
        if self.view:
            q["view"] = self.view
        return self.call("GET", "record:txt", q)


def main():
    try:
        req = json.load(sys.stdin)
    except ValueError as e:
        fail("the request is not JSON: %s" % e)
    if req.get("version") != VERSION:
        fail("protocol version %r; this script speaks %d" % (req.get("version"), VERSION))
    zone = req["zone"].rstrip(".")
    wapi = Wapi()
    if req["action"] == "read":
        txt = {}
        for r in wapi.records(zone):
            txt.setdefault(r["name"], []).append(r["text"])
        json.dump({"version": VERSION, "txt": txt}, sys.stdout)
        return
    if req["action"] != "apply":
        fail("unknown action %r" % req["action"])
    # Removals first (by reference), then additions; each is one WAPI call.
    existing = wapi.records(zone)
    for rm in req.get("remove", []):
        for r in existing:
            if r["name"] == rm["owner"].rstrip(".") and r["text"] == rm["value"]:
                wapi.call("DELETE", r["_ref"])
    for add in req.get("add", []):
        body = {"name": add["owner"].rstrip("."), "text": add["value"], "ttl": add["ttl"], "use_ttl": True}
        if wapi.view:
            body["view"] = wapi.view
        wapi.call("POST", "record:txt", body=body)
    json.dump({"version": VERSION}, sys.stdout)


if __name__ == "__main__":
    main()
