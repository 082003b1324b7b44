"The repository passes its tests on its own: nothing reads a path outside the checkout, and a copy with no sibling folders passes the parity checks."
import os, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|shared[/]spec")  # written so that this file does not match itself


def tracked_files():
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [ROOT / p for p in out.split('\0') if p]


def refers_outside(path):
    "Code (not prose) of a tracked file that names a folder beside the checkout."
    if path.suffix == '.ipynb':
        import json
        cells = json.loads(path.read_text()).get('cells', [])
        return any(OUTSIDE.search(''.join(c['source'])) for c in cells if c['cell_type'] == 'code')
    if path.suffix in ('.py', '.sh', '.yaml', '.yml', '.ini', '.cfg') or path.name in ('Makefile', 'run'):
        return bool(OUTSIDE.search(path.read_text(errors='replace')))
    return False


def test_no_code_reads_outside_the_checkout():
    offenders = [str(p.relative_to(ROOT)) for p in tracked_files() if p.is_file() and refers_outside(p)]
    assert offenders == [], f"these tracked files name a folder outside the repository: {offenders}"


def test_the_guard_sees_a_reference_to_shared(tmp_path):
    "Negative control: the pattern does catch code that reads the sibling shared/ folder."
    f = tmp_path / 'probe.py'; f.write_text("ref = Path('..{0}shared{0}spec{0}reference{0}ref_A.safetensors')\n".format('/'))
    assert refers_outside(f)


@pytest.mark.skipif(shutil.which('git') is None, reason='needs git to list the tracked files')
def test_a_copy_with_nothing_beside_it_passes_the_parity_checks(tmp_path):
    "Copy only the tracked files into an empty folder (no shared/ beside it) and run the v1 parity checks there."
    copy = tmp_path / 'alone' / 'easyanimate'
    for f in tracked_files():
        if not f.is_file(): continue
        dst = copy / f.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    assert [p.name for p in copy.parent.iterdir()] == [copy.name], "the copy must have nothing beside it"
    env = dict(os.environ, PYTHONPATH=str(copy), HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', CI='true')
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_transformer.py', '-k', 'matches_original'],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert re.match(r'\d+ passed, \d+ deselected in', summary), f"parity checks skipped or missing in the copy: {summary}"
    probe = subprocess.run([sys.executable, '-c', 'import easyanimate; print(easyanimate.__file__)'], cwd=copy, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).resolve().is_relative_to(copy.resolve()), "the copy ran another checkout's package"
