#!/usr/bin/env bash
# Runs a command where the dynamic loader cannot find cuBLAS or cuSOLVER, as on a machine with only
# the NVIDIA driver: their directories are dropped from LD_LIBRARY_PATH, and the files the loader's
# cache (ldconfig) would find are covered with /dev/null in a private mount namespace (as root, or
# through an unprivileged user namespace). Exits 3, running nothing, when they cannot be hidden.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 command [args...]" >&2; exit 2; }
pattern='lib(cublas|cublasLt|cusolver)\.so'

# 1. LD_LIBRARY_PATH: keep only directories without those libraries.
kept=""
IFS=: read -r -a dirs <<< "${LD_LIBRARY_PATH:-}"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if ls "$d" 2>/dev/null | grep -Eq "^$pattern"; then echo "without_cuda_math_libs: dropping $d from LD_LIBRARY_PATH" >&2; continue; fi
  kept="${kept:+$kept:}$d"
done
export LD_LIBRARY_PATH="$kept"

# 2. The loader's cache and default directories: the files themselves.
mapfile -t files < <( { ldconfig -p 2>/dev/null | awk '{print $NF}'; ls /usr/local/cuda*/lib64/* /usr/lib/x86_64-linux-gnu/* 2>/dev/null; } \
                      | grep -E "/$pattern" | sort -u )
if [ ${#files[@]} -eq 0 ]; then exec "$@"; fi
echo "without_cuda_math_libs: hiding ${files[*]}" >&2
cover='for f in "$@"; do case "$f" in --) shift; break;; esac; mount --bind /dev/null "$(readlink -f "$f")" || exit 3; shift; done; exec "$@"'
for how in "unshare --mount" "unshare --mount --map-root-user"; do
  # shellcheck disable=SC2086
  if $how true 2>/dev/null; then exec $how bash -c "$cover" bash "${files[@]}" -- "$@"; fi
done
echo "without_cuda_math_libs: cannot hide ${files[*]} (no mount namespace)" >&2
exit 3
