#!/usr/bin/env python3
# certbridge exec backend for OpenStack Designate (DNS API v2): TXT recordsets of one zone.
"""Use as acme_txt_publish's `method: exec` command (protocol: docs/dns-backends.md).

Environment (pass it with the zone's `env` option; nothing else reaches this script):
  DESIGNATE_URL    the DNS endpoint, e.g. https://dns.example.org:9001 (required)
  OS_TOKEN         a Keystone token for the zone's project (required; never printed),
                   e.g. from `openstack token issue -f value -c id` before the run
  OS_CACERT        CA bundle for the endpoint's certificate (default: the system's)

Designate keeps one recordset per owner and type; a change rewrites the owner's TXT
recordset (PUT), creates it (POST) or deletes it when it becomes empty (DELETE).
Python 3 standard library only. Tested against a stand-in of the Designate calls it makes
(tests/dns_api_standin.py), since no Designate can run in certbridge's tests."""

import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

VERSION = 1


def fail(msg):
    print("designate: " + msg, file=sys.stderr)
    sys.exit(1)


def env(name):
    v = os.environ.get(name)
    if not v:
        fail("%s is not set (add it to the zone's `env`)" % name)
    return v


class Designate:
    def __init__(self):
        self.base = env("DESIGNATE_URL").rstrip("/") + "/v2/"
        self.token = env("OS_TOKEN")
        ca = os.environ.get("OS_CACERT")
        self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()

    def call(self, method, path, query=None, body=None):
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("X-Auth-Token", self.token)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            fail("%s %s: HTTP %d: %s" % (method, path, e.code, detail))
        except (urllib.error.URLError, OSError) as e:
            fail("%s %s: %s" % (method, path, e))

    def zone_id(self, zone):
        zones = self.call("GET", "zones", {"name": zone + "."})["zones"]
        if not zones:
            fail("zone %s not found" % zone)
        return zones[0]["id"]

    def txt_sets(self, zid):
        sets = self.call("GET", "zones/%s/recordsets" % zid, {"type": "TXT", "limit": "1000"})
        return {s["name"].rstrip("."): s for s in sets["recordsets"] if s["type"] == "TXT"}


def unquote(record):
    # Designate returns TXT data in zone-file form: quoted strings, maybe several.
    return "".join(part for i, part in enumerate(record.split('"')) if i % 2 == 1) or record


def main():
    try:
        req = json.load(sys.stdin)
    except ValueError as e:
        fail("the request is not JSON: %s" % e)
    if req.get("version") != VERSION:
        fail("protocol version %r; this script speaks %d" % (req.get("version"), VERSION))
    zone = req["zone"].rstrip(".")
    api = Designate()
    zid = api.zone_id(zone)
    sets = api.txt_sets(zid)
    if req["action"] == "read":
        txt = {owner: [unquote(r) for r in s["records"]] for owner, s in sets.items()}
        json.dump({"version": VERSION, "txt": txt}, sys.stdout)
        return
    if req["action"] != "apply":
        fail("unknown action %r" % req["action"])
    owners = {}
    ttl = req.get("ttl", 60)
    for owner, s in sets.items():
        owners[owner] = {unquote(r) for r in s["records"]}
    touched = set()
    for rm in req.get("remove", []):
        o = rm["owner"].rstrip(".")
        owners.setdefault(o, set()).discard(rm["value"])
        touched.add(o)
    for add in req.get("add", []):
        o = add["owner"].rstrip(".")
        owners.setdefault(o, set()).add(add["value"])
        touched.add(o)
    for o in sorted(touched):
        records = ['"%s"' % v for v in sorted(owners[o])]
        if o in sets and records:
            api.call("PUT", "zones/%s/recordsets/%s" % (zid, sets[o]["id"]), body={"records": records, "ttl": ttl})
        elif o in sets:
            api.call("DELETE", "zones/%s/recordsets/%s" % (zid, sets[o]["id"]))
        elif records:
            api.call("POST", "zones/%s/recordsets" % zid,
                     body={"name": o + ".", "type": "TXT", "records": records, "ttl": ttl})
    json.dump({"version": VERSION}, sys.stdout)


if __name__ == "__main__":
    main()
