"""Shared plumbing of the benchmark scripts: threads, timing in interleaved rounds, resident memory, machine facts, results."""
import argparse, datetime, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results'
IMAGES = ROOT / 'nbs' / 'images'


def setup_torch(threads):
    import torch
    if threads: torch.set_num_threads(threads)
    return torch


def rss_mib():
    "Resident set size of this process now."
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_rss_mib():
    """Highest resident set size of this process so far: VmHWM, which starts afresh at exec (ru_maxrss does not: a child
    started by a large parent inherits the parent's peak)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average(): return os.getloadavg()


def cpu_model():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown CPU'


def bf16_emulated() -> bool:
    "True on a CPU without bf16 instructions, where bfloat16 is emulated and many times slower than float32."
    import torch
    from easyanimate.attention import half_is_emulated
    return half_is_emulated(torch.bfloat16)


def choices(given, default, is_bf16=lambda x: 'bf16' in x):
    "The comma-separated choices `given`, or else `default` without its bf16 ones where bf16 is emulated (`bf16_emulated`)."
    if given is not None: return [x for x in given.split(',') if x]
    return [x for x in default if not (is_bf16(x) and bf16_emulated())]


def machine(threads):
    import torch
    return dict(date=datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), cpu=cpu_model(), cores=os.cpu_count(), threads=threads or torch.get_num_threads(),
                torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(), python=platform.python_version(),
                bf16_emulated=bf16_emulated(), load_before=[round(x, 2) for x in load_average()])


def cpu_name(m):
    "The CPU of machine facts `m` for a caption: its name and instruction set."
    return f"{m['cpu']}, {m['cpu_capability']}"


def rounds(fns, n, warmup=1, clock=time.perf_counter):
    """Time each callable of `fns` (name -> fn) `n` times in interleaved rounds (the order reversed every other round, so a
    change in machine load hits all alike), after `warmup` calls each; returns name -> list of seconds."""
    for f in fns.values():
        for _ in range(warmup): f()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(n):
        for k in (names if r % 2 == 0 else names[::-1]):
            start = clock(); fns[k](); times[k].append(clock() - start)
    return times


def summary(seconds):
    return dict(median=statistics.median(seconds), min=min(seconds), times=[round(s, 4) for s in seconds])


def run_json(cmd, timeout=None):
    "Run a worker command that prints one JSON object as its last line."
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode: raise SystemExit(f"worker failed ({' '.join(map(str, cmd))}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def is_result_name(name) -> bool:
    "A bare name ('pipeline') is a result kept under bench/results/, with its plots in the docs; anything else is a path."
    return Path(name).parent == Path('.')


def images_dir(name) -> Path:
    "Where the plots of result `name` go: the docs' images for a named result, else beside the result's path."
    return IMAGES if is_result_name(name) else Path(name).parent


def write_result(name, data, markdown=None):
    "Write `name`.json (and .md) under bench/results/, or at `name` itself when it is a path."
    base = RESULTS / name if is_result_name(name) else Path(name)
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix('.json').write_text(json.dumps(data, indent=1))
    if markdown is not None: base.with_suffix('.md').write_text(markdown)
    return base.with_suffix('.json')


def md_table(header, rows):
    "A markdown table from a header list and rows of strings."
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' if i == 0 else '---:' for i in range(len(header))) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]) + '\n'


def model_parser(description):
    "The options every model benchmark shares: which pipeline, how many threads, which clock."
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--model', help='pipeline folder (default: the bundled demo model, or a random stand-in of its size)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help="wall: elapsed time; cpu: this process's CPU time (needs --threads 1; steady on a shared machine)")
    return p
