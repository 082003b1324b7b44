"""Kernel benchmark behind the choices in easyanimate.attention: float32/bfloat16 linear layers through F.linear (BLAS
addmm) and through oneDNN (bias and GELU fused), forward and input gradient; and attention through SDPA's fused CPU kernel
and through batched matmuls, for the shapes of the mid-size benchmark model and of 512x512 video.

    python bench/bench_kernels.py                 # one thread, CPU time (steady on a shared machine)
"""
import argparse, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, setup_torch, machine, load_average, write_result, md_table

LINEARS = [  # tokens, in, out, activation: the mid-size model's layers
    (4096, 384, 1152, None), (4096, 384, 384, None), (4096, 384, 1536, 'tanh'), (4096, 1536, 384, None), (4096, 384, 1536, 'none'), (120, 4096, 384, None)]
ATTENTION = [  # batch, heads, queries, keys, head_dim, what
    (16, 6, 256, 256, 64, 'spatial, mid-size model (16 frames of 16x16 tokens)'), (64, 8, 64, 64, 48, 'temporal grid, mid-size model'),
    (1, 6, 4096, 120, 64, 'cross-attention to a 120-token caption'), (8, 4, 512, 512, 32, 'temporal grid, demo model, 128 frames'),
    (2, 16, 1024, 1024, 72, 'spatial, XL at 512x512 (32x32 tokens)'), (4, 8, 320, 320, 144, 'temporal grid, 80 frames')]


def best(f, clock, n):
    f(); ts = []
    for _ in range(n):
        start = clock(); f(); ts.append(clock() - start)
    return min(ts) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeat', type=int, default=5, help='timed calls per kernel (the fastest is reported)')
    p.add_argument('--out', default='kernels')
    args = p.parse_args(argv)
    torch = setup_torch(args.threads)
    import torch.nn.functional as F
    from easyanimate.attention import bmm_attention, _onednn, ONEDNN_DTYPES
    clock = time.process_time if args.threads == 1 else time.perf_counter
    info = machine(args.threads)
    lin_rows, att_rows = [], []
    for dtype, name in ((torch.float32, 'fp32'), (torch.bfloat16, 'bf16')):
        for n, i, o, act in LINEARS:
            x, w, b = torch.randn(n, i).to(dtype), (torch.randn(o, i) * 0.05).to(dtype), torch.randn(o).to(dtype)
            plain = (lambda: F.linear(x, w, b)) if act is None else (lambda: F.gelu(F.linear(x, w, b), approximate=act))
            fused = lambda: _onednn(x, w, b, 'gelu' if act else None, act or 'none')
            g = torch.randn(n, o).to(dtype)
            onednn = dtype in ONEDNN_DTYPES   # oneDNN takes bfloat16 only on CPUs with bf16 instructions
            row = [name, f"{n} x {i} -> {o}" + (f" + GELU({act})" if act else ''), best(plain, clock, args.repeat), best(fused, clock, args.repeat) if onednn else None]
            row += [best(lambda: g @ w, clock, args.repeat), best(lambda: _onednn(g, w.t()), clock, args.repeat) if onednn else None]
            lin_rows.append(row)
        for b_, h, nq, nk, d, what in ATTENTION:
            q, k, v = torch.randn(b_, h, nq, d).to(dtype), torch.randn(b_, h, nk, d).to(dtype), torch.randn(b_, h, nk, d).to(dtype)
            att_rows.append([name, what, f"{b_ * h} x {nq} x {nk} x {d}", best(lambda: F.scaled_dot_product_attention(q, k, v), clock, args.repeat),
                             best(lambda: bmm_attention(q, k, v), clock, args.repeat)])
    info['load_after'] = [round(x, 2) for x in load_average()]
    secs = 'CPU ms, one thread' if args.threads == 1 else f'ms, {args.threads} threads'
    ms = lambda t: 'n/a' if t is None else f"{t:.1f}"
    ratio = lambda a, b: 'n/a' if b is None else f"{a / b:.2f}x"
    md = (f"Kernels on {cpu_name(info)} ({secs}; fastest of {args.repeat}; torch {info['torch']}, {info['date']}; load average {info['load_before'][0]:.1f}).\n\n"
          f"Linear layers, forward (F.linear is BLAS addmm for float32, {'oneDNN' if torch.bfloat16 in ONEDNN_DTYPES else 'emulated'} for bfloat16) and input gradient:\n\n"
          + md_table(['dtype', 'shape', 'F.linear (+ F.gelu)', 'oneDNN, fused', 'speed-up', 'grad input: matmul', 'grad input: oneDNN', 'speed-up'],
                     [[r[0], r[1], ms(r[2]), ms(r[3]), ratio(r[2], r[3]), ms(r[4]), ms(r[5]), ratio(r[4], r[5])] for r in lin_rows])
          + ("" if torch.bfloat16 in ONEDNN_DTYPES else "\nn/a: oneDNN has no bfloat16 linear primitive on this CPU (no bf16 instructions); bfloat16 runs through F.linear.\n")
          + "\nAttention (batch x heads, queries x keys x head dim):\n\n"
          + md_table(['dtype', 'layer', 'shape', 'SDPA', 'batched matmuls', 'matmuls / SDPA'],
                     [[r[0], r[1], r[2], f"{r[3]:.1f}", f"{r[4]:.1f}", f"{r[4] / r[3]:.2f}"] for r in att_rows]))
    write_result(args.out, dict(machine=info, linear=lin_rows, attention=att_rows), md)
    print(md)


if __name__ == '__main__':
    main()
