#!/usr/bin/env python3
"""Warp-stall samples of one kernel from `ncu --set full --page source --print-source sass`:
the total per stall reason, then per region of the SASS (the instructions that run fewer than
`--hot` times, i.e. once-per-block code, and the hot code before, in and after the HMMA run), then
the instructions with the most samples. Usage: ncu_stalls.py FILE [--hot N] [--top K]"""
import collections
import re
import sys

REASONS = ("barrier branch dispatch drain imc lg long_sb math membar mio misc no_inst not_selected "
           "selected short_sb sleep tex wait").split()


def parse(path):
    rows = []
    for line in open(path):
        m = re.match(r"^(0x[0-9a-f]+)\s+(.*?)\s{2,}(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if not m:
            continue
        try:
            stalls = [int(v) for v in line.split()[-36:-18]]  # the "All Samples" half of the stall columns
        except ValueError:
            stalls = [0] * len(REASONS)
        rows.append({"sass": m.group(2).strip(), "samples": int(m.group(3)), "executed": int(m.group(6)),
                     "stalls": dict(zip(REASONS, stalls))})
    return rows


def summary(rows, idx):
    c = collections.Counter()
    for i in idx:
        c.update(rows[i]["stalls"])
    return sum(rows[i]["samples"] for i in idx), [(k, v) for k, v in c.most_common(6) if v > 0]


def main():
    args = sys.argv[1:]
    hot = int(args[args.index("--hot") + 1]) if "--hot" in args else 20000
    top = int(args[args.index("--top") + 1]) if "--top" in args else 12
    rows = parse(args[0])
    if not rows:
        sys.exit("no SASS rows found")
    total = sum(r["samples"] for r in rows)
    print(f"{len(rows)} instructions, {total} samples")
    hmma = [i for i, r in enumerate(rows) if "HMMA" in r["sass"]]
    regions = {"all": range(len(rows)), "cold (executed < hot)": [i for i, r in enumerate(rows) if r["executed"] < hot]}
    if hmma:
        first, last = hmma[0], hmma[-1]
        hot_rows = [i for i, r in enumerate(rows) if r["executed"] >= hot]
        regions["hot, before the HMMA run"] = [i for i in hot_rows if i < first]
        regions["hot, HMMA run"] = [i for i in hot_rows if first <= i <= last]
        regions["hot, after it"] = [i for i in hot_rows if i > last]
    for name, idx in regions.items():
        n, reasons = summary(rows, idx)
        print(f"{name}: {n} samples ({100 * n / total:.0f}%) " + ", ".join(f"{k} {v}" for k, v in reasons))
    print("top instructions (index, samples, executed, SASS):")
    for i in sorted(range(len(rows)), key=lambda i: -rows[i]["samples"])[:top]:
        print(f"  {i} {rows[i]['samples']} {rows[i]['executed']} {rows[i]['sass'][:90]}")


if __name__ == "__main__":
    main()
