#!/usr/bin/env python3
# certbridge: stand-ins of Infoblox WAPI and OpenStack Designate v2 for the exec examples' tests.
"""Neither Infoblox nor Designate can run here, so the tests of docs/examples/ talk to this
server instead: the few TXT-record calls of each API, with their authentication, backed by a
real DNS server. Every accepted change is applied to a zone of the test bed's BIND by
TSIG-signed nsupdate, so what certbridge verifies afterwards is real DNS.

    dns_api_standin.py --zone Z --server ADDR:PORT --tsig ALG:NAME:SECRET \
        --user U --password P --token T --calls FILE

Prints `PORT <n>` once listening on 127.0.0.1. Every API call is appended to FILE as one
JSON line (method, path, status) so a test can check which calls were made."""

import argparse
import base64
import json
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

WAPI = "/wapi/v2.12/"
DESIGNATE = "/v2/"


class Zone:
    """The records the APIs created, and applying them to BIND."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.txt = {}  # id -> (owner, value, ttl)

    def nsupdate(self, lines):
        server, port = self.args.server.rsplit(":", 1)
        script = "server %s %s\nzone %s\n%s\nsend\n" % (server, port, self.args.zone, "\n".join(lines))
        out = subprocess.run(["nsupdate", "-y", self.args.tsig], input=script, capture_output=True,
                             text=True, timeout=20)
        if out.returncode != 0:
            raise RuntimeError("nsupdate: " + out.stderr.strip())

    def add(self, owner, value, ttl):
        with self.lock:
            self.nsupdate(['update add %s. %d TXT "%s"' % (owner, ttl, value)])
            rid = uuid.uuid4().hex
            self.txt[rid] = (owner, value, ttl)
            return rid

    def delete(self, rid):
        with self.lock:
            owner, value, _ = self.txt[rid]
            self.nsupdate(['update delete %s. TXT "%s"' % (owner, value)])
            del self.txt[rid]


class Handler(BaseHTTPRequestHandler):
    zone = None
    args = None

    def log_message(self, fmt, *a):  # quiet; calls go to the calls file
        pass

    def record(self, status):
        with open(self.args.calls, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "status": status}) + "\n")

    def reply(self, status, body):
        self.record(status)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def authorised(self):
        if self.path.startswith(WAPI):
            want = "Basic " + base64.b64encode(("%s:%s" % (self.args.user, self.args.password)).encode()).decode()
            return self.headers.get("Authorization") == want
        return self.headers.get("X-Auth-Token") == self.args.token

    def handle_any(self):
        if not self.authorised():
            return self.reply(401, {"Error": "AdmConProtoError: authentication failed"})
        try:
            if self.path.startswith(WAPI):
                return self.wapi(urlparse(self.path))
            if self.path.startswith(DESIGNATE):
                return self.designate(urlparse(self.path))
            return self.reply(404, {"message": "no such API"})
        except RuntimeError as e:
            return self.reply(500, {"message": str(e)})

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    # Infoblox WAPI: record:txt objects, referenced by `record:txt/<id>:<name>/default`.
    def wapi(self, url):
        rest = url.path[len(WAPI):]
        zone = self.zone
        if self.command == "GET" and rest == "record:txt":
            q = parse_qs(url.query)
            if q.get("zone", [""])[0].rstrip(".") != self.args.zone:
                return self.reply(400, {"Error": "zone not found"})
            rows = [{"_ref": "record:txt/%s:%s/default" % (rid, o), "name": o, "text": v, "ttl": t}
                    for rid, (o, v, t) in sorted(zone.txt.items())]
            return self.reply(200, rows)
        if self.command == "POST" and rest == "record:txt":
            b = self.body()
            name = b["name"].rstrip(".")
            if not (name == self.args.zone or name.endswith("." + self.args.zone)):
                return self.reply(400, {"Error": "name outside the zone"})
            rid = zone.add(name, b["text"], int(b.get("ttl", 60)))
            return self.reply(201, "record:txt/%s:%s/default" % (rid, name))
        if self.command == "DELETE" and rest.startswith("record:txt/"):
            rid = rest[len("record:txt/"):].split(":", 1)[0]
            if rid not in zone.txt:
                return self.reply(404, {"Error": "no such object"})
            zone.delete(rid)
            return self.reply(200, rest)
        return self.reply(400, {"Error": "unsupported call"})

    # Designate v2: one zone; TXT recordsets with quoted records.
    def designate(self, url):
        parts = [p for p in url.path[len(DESIGNATE):].split("/") if p]
        zone = self.zone
        zid = "z-" + self.args.zone
        if self.command == "GET" and parts == ["zones"]:
            name = parse_qs(url.query).get("name", [""])[0]
            zones = [{"id": zid, "name": self.args.zone + "."}] if name in ("", self.args.zone + ".") else []
            return self.reply(200, {"zones": zones})
        if len(parts) < 3 or parts[:1] != ["zones"] or parts[1] != zid or parts[2] != "recordsets":
            return self.reply(404, {"message": "no such zone"})
        if self.command == "GET" and len(parts) == 3:
            sets = {}
            for rid, (o, v, t) in sorted(zone.txt.items()):
                s = sets.setdefault(o, {"id": "rs-" + o, "name": o + ".", "type": "TXT", "ttl": t, "records": []})
                s["records"].append('"%s"' % v)
            return self.reply(200, {"recordsets": list(sets.values())})
        if self.command == "POST" and len(parts) == 3:
            b = self.body()
            owner = b["name"].rstrip(".")
            if b.get("type") != "TXT" or any(o == owner for (o, _, _) in zone.txt.values()):
                return self.reply(409, {"message": "recordset exists or wrong type"})
            for r in b["records"]:
                zone.add(owner, r.strip('"'), int(b.get("ttl") or 60))
            return self.reply(202, {"id": "rs-" + owner, "name": owner + "."})
        if len(parts) == 4 and parts[3].startswith("rs-"):
            owner = parts[3][3:]
            mine = {rid: v for rid, (o, v, _) in zone.txt.items() if o == owner}
            if not mine:
                return self.reply(404, {"message": "no such recordset"})
            if self.command == "DELETE":
                for rid in list(mine):
                    zone.delete(rid)
                return self.reply(202, {})
            if self.command == "PUT":
                b = self.body()
                want = {r.strip('"') for r in b["records"]}
                ttl = int(b.get("ttl") or 60)
                for rid, v in mine.items():
                    if v not in want:
                        zone.delete(rid)
                for v in want - set(mine.values()):
                    zone.add(owner, v, ttl)
                return self.reply(202, {"id": parts[3]})
        return self.reply(400, {"message": "unsupported call"})


def main():
    p = argparse.ArgumentParser()
    for opt in ("--zone", "--server", "--tsig", "--user", "--password", "--token", "--calls"):
        p.add_argument(opt, required=True)
    args = p.parse_args()
    args.zone = args.zone.rstrip(".")
    Handler.args = args
    Handler.zone = Zone(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("PORT %d" % httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
