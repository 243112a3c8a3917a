# Prototype (PyTorch, H200) of a GaLore refresh by Chebyshev-filtered subspace iteration on the
# Gram matrix formed in split TF32, finished by the f64 two-sided Rayleigh-Ritz on X: how many
# filter degrees reach what accuracy on randn gradients (flat spectrum), and what each phase costs.
# Reference: the top-r right singular vectors from eigh of the f64 Gram matrix.
import torch, time, sys, json
dev = 'cuda'
torch.manual_seed(0)

def sync(): torch.cuda.synchronize()
class T:
    def __init__(s): s.t = {}
    def __call__(s, name, f):
        sync(); t0 = time.perf_counter(); out = f(); sync()
        s.t[name] = s.t.get(name, 0) + (time.perf_counter() - t0) * 1e3
        return out

def tf32_round(x):
    i = x.contiguous().view(torch.int32)
    lsb = (i >> 13) & 1
    i = (i + 0x0fff + lsb) & -8192
    return i.view(torch.float32)
def split(x):
    h = tf32_round(x); return h, x - h
def mm(a, b, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return a @ b
def mm3(a, b):  # split-TF32 product, f32 result
    ah, al = split(a); bh, bl = split(b)
    torch.backends.cuda.matmul.allow_tf32 = True
    return ah @ bh + (ah @ bl + al @ bh)

def gram_split(X, panel=2048):
    m, n = X.shape
    M = torch.zeros(n, n, device=dev)
    torch.backends.cuda.matmul.allow_tf32 = True
    for p in range(0, m, panel):
        h, l = split(X[p:p + panel])
        M.addmm_(h.T, h)
        M.addmm_(h.T, l, alpha=2.0)
    return 0.5 * (M + M.T)

def orth(Z):  # rows orthonormal, f64 CholeskyQR2, result in Z's dtype
    dt = Z.dtype
    for _ in range(2):
        Zd = Z.double()
        Zd = Zd / Zd.norm(dim=1, keepdim=True)
        L = torch.linalg.cholesky(Zd @ Zd.T)
        Zd = torch.linalg.solve_triangular(L, Zd, upper=False)
        Z = Zd.to(dt)
    return Z

def rr(Z, A, prod):
    Y = prod(Z, A)
    H = (Y.double() @ Z.double().T); H = 0.5 * (H + H.T)
    th, W = torch.linalg.eigh(H)
    th = th.flip(0); W = W.flip(1)
    return th, (W.T @ Z.double()).to(Z.dtype)

def filt(Z, A, b, d, prod):
    Y0 = Z
    Y1 = (2.0 / b) * prod(Z, A) - Z
    for j in range(1, d):
        Y2 = (4.0 / b) * prod(Y1, A) - 2.0 * Y1 - Y0
        s = Y2.norm(dim=1, keepdim=True)
        Y0, Y1 = Y1 / s, Y2 / s
    return Y1

def span_err(Z, Vref):  # linear: || v - Z^T Z v || with Z orthonormalised in f64
    Zd = Z.double()
    Q, _ = torch.linalg.qr(Zd.T)
    V = Vref.double()
    return (V - (V @ Q) @ Q.T).norm(dim=1)

def refine(X, Z, r):  # f64 two-sided Rayleigh-Ritz on X (Gram X^T X side = rows of Z, length n)
    Xd = X.double(); Zd = Z.double()
    Y = Zd @ Xd.T                       # k x m
    Q, _ = torch.linalg.qr(Y.T)         # m x k
    B = Q.T @ Xd                        # k x n
    C = B @ B.T
    d, E = torch.linalg.eigh(C)
    E = E.flip(1)[:, :r]
    V = E.T @ B
    return (V / V.norm(dim=1, keepdim=True)).float()

def run(m, n, r, k, sched, label, out, gram='split'):
    X = torch.randn(m, n, device=dev)
    tm = T()
    Xd = X.double()
    A64 = Xd.T @ Xd
    lam, U = torch.linalg.eigh(A64)
    lam = lam.flip(0); Vref = U.flip(1)[:, :r].T.contiguous()
    del A64
    res = {'m': m, 'n': n, 'r': r, 'k': k, 'sched': sched, 'label': label,
           'lam_ratio': [float(lam[i] / lam[0]) for i in (r - 1, r, k - 1, k)]}
    A = tm('gram_split', lambda: gram_split(X))
    As = tm('gram_strict', lambda: mm(X.T, X, False))
    if gram == 'strict': A = As.clone()
    At = tm('gram_tf32', lambda: mm(X.T, X, True))
    A64 = Xd.T @ Xd
    res['gram_err'] = {nm: float((a.double() - A64).norm() / A64.norm()) for nm, a in (('split', A), ('strict', As), ('tf32', At))}
    del A64, As, At
    torch.manual_seed(1)
    Z = tm('orth', lambda: orth(torch.randn(k, n, device=dev)))
    th, Z = tm('rr', lambda: rr(Z, A, mm3))
    rounds = []
    A64 = None
    for (d, prec) in ([] if sched == "eigh" else sched):
        prod = mm3 if prec == 's' else ((lambda a, b: mm(a, b, False)) if prec == 'f' else (lambda a, b: mm(a, b, True)))
        b = float(th[-1])
        if prec == 'd':
            if A64 is None: A64 = Xd.T @ Xd
            Z = filt(Z.double(), A64, b, d, lambda a, bb: a @ bb)
        else:
            Z = tm(f'filter_{prec}', lambda: filt(Z, A, b, d, prod))
        Z = tm('orth', lambda: orth(Z))
        th, Z = tm('rr', lambda: rr(Z, A64 if prec == 'd' else A, (lambda a, bb: a @ bb) if prec == 'd' else (prod if prec == 'f' else mm3)))
        e = span_err(Z, Vref)
        rounds.append({'d': d, 'prec': prec, 'b_over_lam1': b / float(lam[0]), 'span_err_max': float(e.max()), 'span_err_med': float(e.median())})
    Z = Z.float()
    if sched == 'eigh':
        w, U = tm('eigh_f32_gram', lambda: torch.linalg.eigh(A))
        Z = U.flip(1)[:, :k].T.contiguous()
        res['rounds'] = [{'span_err_max': float(span_err(Z, Vref).max())}]
    V = tm('refine', lambda: refine(X, Z, r))
    Vd = V.double(); Vd = Vd / Vd.norm(dim=1, keepdim=True)
    sg = torch.sign((Vd * Vref.double()).sum(1, keepdim=True))
    ang = (Vd - sg * Vref.double()).norm(dim=1)
    res.setdefault('rounds', rounds)
    res['final_vec_err_max'] = float(ang.max()); res['final_vec_err_med'] = float(ang.median())
    res['final_vec_err_worst5'] = [float(v) for v in ang.sort(descending=True).values[:5]]
    res['ms'] = {kk: round(v, 3) for kk, v in tm.t.items()}
    # timings of building blocks
    Zk = torch.randn(k, n, device=dev)
    Ah, Al = split(A)
    def acc_err(K):  # error of a TF32 GEMM on TF32-exact inputs (accumulation only), contraction length K
        Xh = tf32_round(X[:K]); ref = Xh.double().T @ Xh.double(); got = mm(Xh.T, Xh, True)
        return float((got.double() - ref).norm() / ref.norm())
    res['tf32_accum_err'] = {K: acc_err(K) for K in (256, 2048, X.shape[0])}
    res['split_prod_err'] = float(((mm3(Zk, A).double() - Zk.double() @ A.double()).norm() / (Zk.double() @ A.double()).norm()))
    res['strict_prod_err'] = float(((mm(Zk, A, False).double() - Zk.double() @ A.double()).norm() / (Zk.double() @ A.double()).norm()))
    for nm, f in (('prod_tf32', lambda: mm(Zk, A, True)), ('prod_strict', lambda: mm(Zk, A, False)), ('prod_3tf32_pre', lambda: (mm(Zk, Ah, True), mm(Zk, Al, True), mm(Zk, Ah, True))), ('prod_split', lambda: mm3(Zk, A)), ('prod_f64', lambda: Zk.double() @ A.double()),
                  ('eigh_k_f64', lambda: torch.linalg.eigh(torch.eye(k, device=dev, dtype=torch.float64) + 1e-3 * torch.randn(k, k, device=dev, dtype=torch.float64)))):
        f(); sync(); t0 = time.perf_counter()
        for _ in range(5): f()
        sync(); res['ms_' + nm] = round((time.perf_counter() - t0) / 5 * 1e3, 3)
    out.append(res)
    print(json.dumps(res), flush=True)

out = []
which = sys.argv[1] if len(sys.argv) > 1 else 'all'
S = lambda *ds: [(d, 's') for d in ds]
D = lambda *ds: [(d, 'd') for d in ds]
F = lambda *ds: [(d, 'f') for d in ds]
cases = [
    (11008, 4096, 128, 256, 'eigh', 'tall r128 k256 CURRENT eigh f32 gram', 'strict'),
    (11008, 4096, 128, 256, F(8, 12, 12, 12), 'tall r128 k256 strict gram strict prod', 'strict'),
    (11008, 4096, 128, 160, 'eigh', 'tall r128 k160 CURRENT eigh f32 gram', 'strict'),
    (4096, 4096, 128, 256, F(8, 12, 12), 'square r128 k256 strict', 'strict'),
    (11008, 4096, 512, 640, F(6, 12, 12, 12), 'tall r512 k640 strict', 'strict'),
    (11008, 4096, 512, 576, 'eigh', 'tall r512 k576 CURRENT', 'strict'),
]
cases_old2 = [
    (11008, 4096, 128, 256, D(8, 12, 12, 12), 'tall r128 k256 f64 oracle'),
    (11008, 4096, 128, 256, S(8, 12, 12, 12, 12), 'tall r128 k256 split'),
    (11008, 4096, 128, 256, S(4, 6, 6, 6, 6, 6, 6, 6), 'tall r128 k256 split short rounds'),
    (11008, 4096, 128, 384, S(6, 10, 10, 10), 'tall r128 k384 split'),
    (4096, 4096, 128, 256, S(8, 12, 12, 12), 'square r128 k256 split'),
    (11008, 4096, 512, 768, D(6, 12, 12, 12), 'tall r512 k768 f64 oracle'),
    (11008, 4096, 512, 768, S(6, 12, 12, 12), 'tall r512 k768 split'),
]
cases_old = [
    (11008, 4096, 128, 256, S(8, 12, 12, 12), 'tall r128 k256 split'),
    (11008, 4096, 128, 256, [(8, 't'), (12, 't'), (12, 's'), (12, 's')], 'tall r128 k256 mixed'),
    (11008, 4096, 128, 192, S(8, 16, 16, 16), 'tall r128 k192 split'),
    (4096, 4096, 128, 256, S(8, 12, 12), 'square r128 k256 split'),
    (11008, 4096, 512, 768, S(6, 12, 12, 12), 'tall r512 k768 split'),
    (4096, 4096, 512, 768, S(6, 12, 12), 'square r512 k768 split'),
]
for c in cases:
    try:
        run(*c[:6], out, *c[6:])
    except Exception as e:
        import traceback; traceback.print_exc()
        print(json.dumps({'case': c[1], 'error': repr(e)}), flush=True)
    torch.cuda.empty_cache()
# dense baseline: what the current path's solver costs
A = torch.randn(11008, 4096, device=dev); G = mm(A.T, A, False)
for nm, f in (('eigh_4096_f32', lambda: torch.linalg.eigh(G)),):
    f(); sync(); t0 = time.perf_counter(); f(); sync(); print(json.dumps({nm + '_ms': (time.perf_counter() - t0) * 1e3}))
print(json.dumps({'device': torch.cuda.get_device_name(), 'torch': torch.__version__, 'date': time.strftime('%Y-%m-%d %H:%M:%S')}))
