#!/usr/bin/env python3
# Self time per function of a V8 .cpuprofile (node --cpu-prof), largest first.
# Usage: cpuprofile_top.py FILE [N]
import collections, json, sys

prof = json.load(open(sys.argv[1]))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
nodes = {n["id"]: n for n in prof["nodes"]}
dt = collections.Counter()
for sid, d in zip(prof["samples"], prof["timeDeltas"]):
    dt[sid] += d
self_us = collections.Counter()
for nid, us in dt.items():
    f = nodes[nid]["callFrame"]
    url = f["url"].split("/")[-1]
    self_us[f"{f['functionName'] or '(anon)'} {url}:{f['lineNumber'] + 1}"] += us
total = sum(self_us.values())
print(f"total {total / 1e3:.1f} ms")
for name, us in self_us.most_common(top):
    print(f"{us / 1e3:9.1f} ms {100 * us / total:5.1f}%  {name}")
