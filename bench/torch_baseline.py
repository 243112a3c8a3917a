#!/usr/bin/env python3
"""The PyTorch reference rows of `slimopt bench` (DESIGN §6, §7).

Runs the benchmark workload (the weight matrices of 4 LLaMA-7B decoder layers, 809,500,672
parameters; every dimension // --scale when scaled) through torch.optim.AdamW(fused=True) on a
CUDA device and prints one JSON document on stdout:

    {"torch": "<version>", "device": "<name>", "cuda": "<version>", "copyGBps": <torch's copy_>, "results":
     [{"name": "adamw", "dtype": "f32", "stateDtype": "f32", "params": ..., "medianMs": ...,
       "minMs": ..., "maxMs": ..., "stateBytesPerParam": ...}, ...]}

Timing is the same as slimopt's (lib/cli/timing.ts): `--warmup` untimed steps are enqueued, then
`--steps` steps with a CUDA event recorded before the first and after each, read once at the end,
so each step's time is the device time of that step. Parameters are randn * 0.02, gradients
randn (never zeros). Note: torch's fused AdamW keeps m and v in the parameter dtype, so its bf16
row has bf16 states (14 bytes moved per parameter, not 22).

Usage: python3 bench/torch_baseline.py [--steps 10] [--warmup 2] [--scale 1]
                                       [--rows adamw:f32,adamw:bf16] [--device cuda:0]
"""
import argparse
import json
import statistics
import sys

HIDDEN, FFN = 4096, 11008  # LLaMA-7B
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def scale_dim(d, scale):
    # The same rule as lib/cli/workload.ts scaleDim: floor, at least 1.
    return max(1, d // scale)


def workload(layers=4, scale=1):
    h, f = scale_dim(HIDDEN, scale), scale_dim(FFN, scale)
    shapes = []
    for _ in range(layers):
        shapes += [(h, h)] * 4 + [(f, h), (f, h), (h, f)]
    return shapes


def time_steps(torch, step, steps, warmup):
    torch.cuda.synchronize()
    evs = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    for _ in range(warmup):
        step()
    evs[0].record()
    for i in range(steps):
        step()
        evs[i + 1].record()
    torch.cuda.synchronize()
    return [evs[i].elapsed_time(evs[i + 1]) for i in range(steps)]


def make_params(torch, shapes, dtype, device):
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=gen))
        p.grad = torch.randn(shape, dtype=dtype, device=device, generator=gen)
        params.append(p)
    return params


def bench_adamw(torch, dtype_name, shapes, args):
    dtype = getattr(torch, DTYPES[dtype_name])
    params = make_params(torch, shapes, dtype, args.device)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, fused=True)
    times = time_steps(torch, opt.step, args.steps, args.warmup)
    n = sum(p.numel() for p in params)
    state_bytes = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                      if torch.is_tensor(t))
    state_dtype = str(opt.state[params[0]]["exp_avg"].dtype).replace("torch.", "")
    del opt, params
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return {
        "name": "adamw", "dtype": dtype_name,
        "stateDtype": {v: k for k, v in DTYPES.items()}.get(state_dtype, state_dtype),
        "impl": "torch.optim.AdamW(fused=True)", "params": n, "tensors": len(shapes), "steps": args.steps,
        "medianMs": statistics.median(times), "minMs": min(times), "maxMs": max(times),
        "stateBytesPerParam": state_bytes / n,
    }


def copy_bandwidth(torch, nbytes, reps, warmup):
    """dst.copy_(src) over nbytes, (read + write) bytes / median time, GB/s: a cross-check of the
    copy bandwidth slimopt measures with its own kernel (the floor of every row)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    times = time_steps(torch, lambda: dst.copy_(src), reps, warmup)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (statistics.median(times) * 1e6)


ROWS = {"adamw": bench_adamw}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--scale", type=int, default=1, help="divide every dimension by this (floored)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rows", default="adamw:f32,adamw:bf16", help="comma-separated name:dtype")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--copy-bytes", type=int, default=2 << 30, help="0: no copy-bandwidth cross-check")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.scale < 1:
        ap.error("--steps >= 1, --warmup >= 0, --scale >= 1")

    import torch
    if not torch.cuda.is_available():
        print("torch_baseline.py: torch sees no CUDA device", file=sys.stderr)
        return 1
    torch.cuda.set_device(torch.device(args.device))
    shapes = workload(args.layers, args.scale)
    copy_gbps = copy_bandwidth(torch, args.copy_bytes, 20, 3) if args.copy_bytes > 0 else None
    results = []
    for row in [r for r in args.rows.split(",") if r]:
        name, _, dtype_name = row.partition(":")
        if name not in ROWS or dtype_name not in DTYPES:
            ap.error(f"unknown row {row!r} (known: {', '.join(ROWS)}; dtypes {', '.join(DTYPES)})")
        print(f"torch_baseline.py: {row} ...", file=sys.stderr, flush=True)
        results.append(ROWS[name](torch, dtype_name, shapes, args))
    doc = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "copyGBps": copy_gbps,
        "results": results,
    }
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
