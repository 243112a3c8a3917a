#!/usr/bin/env python3
"""Opens safetensors files with the reference implementation (Hugging Face `safetensors`) and
prints what it finds: metadata keys, then each tensor's name, dtype and shape.

    python3 bench/check_safetensors.py ckpt.safetensors [more.safetensors ...] [--json]

With --json it prints one JSON document instead:
    {"<file>": {"framework": "pt"|"np", "metadata": {...},
                "tensors": {"<name>": {"dtype": "float32", "shape": [..], "sha256": "<hex of the raw bytes>"}}}}
(test/gpu/checkpoint.gpu.test.ts compares that with slimopt's own bytes.)

torch is used when importable (it has bfloat16); otherwise numpy, which cannot hold BF16 tensors
(reported as errors). Exit status 1 if any file fails to open or any tensor fails to load.
"""
import argparse
import hashlib
import json
import sys

from safetensors import safe_open

try:
    import torch  # noqa: F401
    FRAMEWORK = "pt"
except ImportError:  # pragma: no cover - depends on the machine
    torch = None
    FRAMEWORK = "np"


def describe(t):
    if FRAMEWORK == "pt":
        dtype = str(t.dtype).replace("torch.", "")
        shape = list(t.shape)
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    else:
        dtype = str(t.dtype)
        shape = list(t.shape)
        raw = t.tobytes()
    return {"dtype": dtype, "shape": shape, "sha256": hashlib.sha256(raw).hexdigest()}


def check(path):
    out = {"framework": FRAMEWORK, "metadata": {}, "tensors": {}, "errors": []}
    with safe_open(path, framework=FRAMEWORK) as f:
        out["metadata"] = f.metadata() or {}
        for name in f.keys():
            try:
                out["tensors"][name] = describe(f.get_tensor(name))
            except Exception as e:  # one bad tensor should not hide the others
                out["errors"].append(f"{name}: {e}")
    # The whole-file loader too (it validates the header as a whole).
    if FRAMEWORK == "pt":
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    try:
        load_file(path)
    except Exception as e:
        out["errors"].append(f"load_file: {e}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    results, failed = {}, False
    for path in args.files:
        try:
            results[path] = check(path)
        except Exception as e:
            results[path] = {"framework": FRAMEWORK, "error": str(e)}
            failed = True
            continue
        failed = failed or bool(results[path]["errors"])
    if args.json:
        print(json.dumps(results, indent=1, sort_keys=True))
    else:
        for path, r in results.items():
            print(f"{path}  (safetensors, framework={r['framework']})")
            if "error" in r:
                print(f"  ERROR {r['error']}")
                continue
            for k, v in sorted(r["metadata"].items()):
                shown = v if len(v) <= 100 else v[:97] + "..."
                print(f"  meta {k} = {shown}")
            for name, t in r["tensors"].items():
                print(f"  {name:40s} {t['dtype']:10s} {t['shape']}")
            for e in r["errors"]:
                print(f"  ERROR {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
