# Sourced by the GPU-machine scripts: cuBLAS, cuSOLVER and NCCL from PyTorch's wheels onto
# LD_LIBRARY_PATH, for a system that has none of its own (each optional; slimopt loads them at
# run time).
for lib in cublas cusolver nccl; do
  so=$(python3 - "$lib" <<'PY' 2>/dev/null
import glob, os, sys, site
for d in site.getsitepackages():
    for f in sorted(glob.glob(os.path.join(d, "nvidia", "**", "lib", "lib%s.so.*" % sys.argv[1]), recursive=True)):
        print(f); sys.exit(0)
PY
)
  if [ -n "$so" ]; then export LD_LIBRARY_PATH="$(dirname "$so"):${LD_LIBRARY_PATH:-}"; fi
done
