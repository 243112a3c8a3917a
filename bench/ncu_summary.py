#!/usr/bin/env python3
"""One line per kernel launch of an `ncu --csv --page raw --print-units base` file with the
metrics gpu__time_duration.sum, dram__bytes_read.sum, dram__bytes_write.sum: duration, DRAM bytes
and their rate. ncu writes numbers with thousands separators. Usage: ncu_summary.py CSV [TITLE]"""
import csv
import sys


def number(s):
    return float(s.replace(",", ""))


def main():
    rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
    if len(sys.argv) > 2:
        print(sys.argv[2])
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
