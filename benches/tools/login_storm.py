#!/usr/bin/env python3
"""Resident memory of an `ecsdb serve` process through a storm of logins.

Usage: start a server with `[rate_limit] login_failures_max = 0` (so the
storm is not refused), then
    python3 benches/tools/login_storm.py PORT PID PASSWORD
It sends 80 sequential logins (half with the right password) and 120 from
60 threads at once, printing VmRSS of PID after each phase. Loopback only.
"""
import concurrent.futures
import json
import sys
import urllib.error
import urllib.request

port, pid, password = sys.argv[1], sys.argv[2], sys.argv[3]


def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("VmRSS:")) + " kB"


def login(i):
    body = json.dumps({"username": "admin", "password": password if i % 2 else f"wrong-{i}"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/auth/login", data=body,
                                 headers={"content-type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=60).status
    except urllib.error.HTTPError as e:
        return e.code


print("start", rss())
for i in range(80):
    login(i)
print("after 80 sequential logins", rss())
with concurrent.futures.ThreadPoolExecutor(60) as ex:
    statuses = sorted(set(ex.map(login, range(120))))
print("after 120 concurrent logins", rss(), "statuses", statuses)
