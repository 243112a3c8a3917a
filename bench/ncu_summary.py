#!/usr/bin/env python3
"""One line per kernel launch of an `ncu --csv --page raw --print-units base` file with the
metrics gpu__time_duration.sum, dram__bytes_read.sum, dram__bytes_write.sum: duration, DRAM bytes
and their rate; with --by-name, one line per kernel name instead (launches, total and share of the
summed duration; the DRAM metrics may be absent then). ncu writes numbers with thousands
separators. Usage: ncu_summary.py [--by-name] CSV [TITLE]"""
import csv
import sys


def number(s):
    return float(s.replace(",", ""))


def by_name(rows):
    total, count = {}, {}
    for r in rows:
        try:
            t = number(r["gpu__time_duration.sum"])
        except (KeyError, ValueError):
            continue
        name = r["Kernel Name"][:90]
        total[name] = total.get(name, 0.0) + t
        count[name] = count.get(name, 0) + 1
    s = sum(total.values())
    print("# kernel, launches, total duration, share; all kernels: %.2f ms in %d launches" % (s / 1e6, sum(count.values())))
    for name in sorted(total, key=lambda n: -total[n]):
        print("%-90s %6d %10.1f us %5.1f%%" % (name, count[name], total[name] / 1e3, 100 * total[name] / s))


def main():
    args = sys.argv[1:]
    grouped = bool(args) and args[0] == "--by-name"
    if grouped:
        args = args[1:]
    rows = list(csv.DictReader(l for l in open(args[0]) if l.startswith('"')))
    if len(args) > 1:
        print(args[1])
    if grouped:
        by_name(rows)
        return
    print("# launch, kernel, duration, DRAM read, DRAM written, (read + written) / duration")
    i = 0
    for r in rows:
        try:
            t = number(r["gpu__time_duration.sum"])
            rd = number(r["dram__bytes_read.sum"])
            wr = number(r["dram__bytes_write.sum"])
        except (KeyError, ValueError):
            continue  # the units row
        print("%4d %-72s %9.1f us  read %8.1f MB  write %8.1f MB  %6.0f GB/s"
              % (i, r["Kernel Name"][:72], t / 1e3, rd / 1e6, wr / 1e6, (rd + wr) / t))
        i += 1


main()
