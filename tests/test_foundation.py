"End-to-end tests of the project's own machinery: the README commands, the sync check, the offline docs and README."
import base64, io, os, re, shutil, subprocess, sys
from pathlib import Path

import nbformat, pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT/'scripts'))
import render_docs   # noqa: E402

def run(cmd, cwd, env=None, check=True):
    base = {k: v for k, v in os.environ.items() if k != 'CI'}   # the tests say when they want CI's stricter checks
    res = subprocess.run(cmd, cwd=cwd, env={**base, 'BIN': str(BIN), **(env or {})},
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and res.returncode: pytest.fail(f'{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}')
    return res

def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == 'md' else nbformat.v4.new_code_cell(src) for kind, src in cells]
    return nbformat.writes(nb)

def quick_start_commands(readme):
    section = re.search(r'^## Quick start\n(.*?)(?=^## )', readme, re.M | re.S).group(1)
    block = re.search(r'```sh\n(.*?)```', section, re.S).group(1)
    return [line.split('#')[0].strip() for line in block.splitlines() if line.split('#')[0].strip()]

def test_readme_gives_two_commands_and_ci_runs_the_test_one():
    cmds = quick_start_commands((ROOT/'README.md').read_text())
    assert cmds == ['make demo', 'make test']
    ci = [l.strip() for l in (ROOT/'.ci'/'run').read_text().splitlines()
          if l.strip() and not l.startswith('#') and not l.startswith(('set ', 'cd '))]
    assert ci == ['make test'], ci
    dry = run(['make', '-n', 'demo', 'test', 'VENV=/nonexistent/venv'], ROOT).stdout
    torch_at = dry.index('pip install -q torch==2.13.0')
    assert 'import torch' in dry[:torch_at], 'torch is only installed when none is importable'
    assert torch_at < dry.index('pip install -q -e ".[dev]" -c /nonexistent/venv/torch-pin.txt'), \
        'the pinned torch goes in first, then the package with that torch held fixed'
    assert 'easyanimate generate' in dry and 'bash scripts/test.sh' in dry

def test_chapters_come_in_file_name_order_after_the_index(tmp_path):
    for name in ['10_b.ipynb', '02_a.ipynb', 'index.ipynb', '_scratch.ipynb', '.hidden.ipynb']:
        (tmp_path/name).write_text(notebook(('md', f'# Title of {name}\n\n> About {name}')))
    assert [p.name for p in render_docs.chapters(tmp_path)] == ['index.ipynb', '02_a.ipynb', '10_b.ipynb']
    assert render_docs.title_summary(tmp_path/'02_a.ipynb') == ('Title of 02_a.ipynb', 'About 02_a.ipynb')
    assert render_docs.sidebar_yml(tmp_path).splitlines()[3:] == [
        '      - index.ipynb', '      - 02_a.ipynb', '      - 10_b.ipynb']

@pytest.fixture
def tiny_project(tmp_path):
    "A two-chapter nbdev project using this repository's settings."
    shutil.copy(ROOT/'settings.ini', tmp_path)
    nbs = tmp_path/'nbs'; nbs.mkdir()
    shutil.copy(ROOT/'nbs'/'styles.css', nbs)
    gif = io.BytesIO()
    from PIL import Image
    Image.new('RGB', (4, 4), 'red').save(gif, format='GIF')
    (nbs/'index.ipynb').write_text(notebook(
        ('md', '# tiny\n\n> A tiny project.'), ('md', 'Start with [the first chapter](01_one.ipynb).'),
        ('md', f'## Chapters\n\n{render_docs.CHAPTERS_MARK}')))
    (nbs/'01_one.ipynb').write_text(notebook(
        ('md', '# One\n\n> The first chapter.'),
        ('code', '#| hide\nsecret_plumbing = 1'),
        ('code', '#| export\ndef double(x):\n    "Twice `x`."\n    return 2 * x'),
        ('code', '#| echo: false\nprint("only the output " + "is shown")'),
        ('code', f'from IPython.display import Image, HTML\nImage(data=__import__("base64").b64decode("{base64.b64encode(gif.getvalue()).decode()}"))'),
        ('code', 'open("clip.mp4", "wb").write(b"not really a video")\nHTML(\'<video src="clip.mp4" controls></video>\')'),
        ('md', 'On to [chapter two](02_two.ipynb#details).')))
    (nbs/'02_two.ipynb').write_text(notebook(('md', '# Two\n\n> The second chapter.'), ('md', '## Details\n\nNothing more.')))
    return tmp_path

def test_meta_writes_sidebar_chapter_list_and_readme_then_checks_them(tiny_project):
    assert run([sys.executable, ROOT/'scripts'/'render_docs.py', 'meta', '--check'], tiny_project, check=False).returncode
    run([sys.executable, ROOT/'scripts'/'render_docs.py', 'meta'], tiny_project)
    run([sys.executable, ROOT/'scripts'/'render_docs.py', 'meta', '--check'], tiny_project)
    readme = (tiny_project/'README.md').read_text()
    assert readme.startswith('# tiny\n\n> A tiny project.\n')
    assert '- 01 [One](nbs/01_one.ipynb) — The first chapter.\n- 02 [Two](nbs/02_two.ipynb) — The second chapter.' in readme
    assert '[the first chapter](nbs/01_one.ipynb)' in readme
    assert render_docs.sidebar_order(tiny_project/'nbs') == ['index.ipynb', '01_one.ipynb', '02_two.ipynb']
    (tiny_project/'nbs'/'03_three.ipynb').write_text(notebook(('md', '# Three')))
    res = run([sys.executable, ROOT/'scripts'/'render_docs.py', 'meta', '--check'], tiny_project, check=False)
    assert res.returncode and 'sidebar.yml' in res.stderr, 'a new chapter makes the sidebar stale'

def test_site_has_every_page_with_the_sidebar_in_reading_order_and_its_media(tiny_project):
    run([sys.executable, ROOT/'scripts'/'render_docs.py', 'meta'], tiny_project)
    out = tiny_project/'_docs'
    run([sys.executable, ROOT/'scripts'/'render_docs.py', 'site', '--execute', '--out', out, '--workers', '2'], tiny_project)
    pages = {p: (out/p).read_text() for p in ['index.html', 'one.html', 'two.html']}
    for page, html in pages.items():
        nav = re.search(r'<nav class="ea-sidebar">(.*?)</nav>', html, re.S).group(1)
        assert re.findall(r'<li[^>]*><a href="([^"]+)">', nav) == ['index.html', 'one.html', 'two.html']
        assert f'<li class="active"><a href="{page}">' in nav
    one = pages['one.html']
    assert '<h1 class="ea-title">One</h1>' in one and 'The first chapter.' in one
    assert '<h3 id="double">' in one and 'Twice <code>x</code>' in one, 'exported names get their docs'
    assert 'return 2 * x' not in one, 'exported source is shown by its docs, as in nbdev'
    assert 'secret_plumbing' not in one, '#| hide cells are left out'
    assert 'only the output is shown' in one and 'print(' not in one, 'echo: false shows the output only'
    assert 'src="data:image/gif;base64,' in one, 'GIF outputs are embedded'
    assert '&lt;video src="clip.mp4" controls&gt;' in one, 'code listings show the source as written'
    video = re.search(r'<video [^>]*src="(media/[^"]+)"', one).group(1)
    assert (out/video).read_bytes() == b'not really a video', 'files an output shows are copied'
    assert 'href="two.html#details"' in one and 'id="details"' in pages['two.html']
    assert 'href="one.html"' in pages['index.html']
    assert (out/'assets'/'site.css').exists() and (out/'styles.css').exists()

def test_sync_check_catches_a_stale_export_and_an_unclean_notebook(tmp_path):
    if run(['git', 'rev-parse', '--is-inside-work-tree'], ROOT, check=False).returncode: pytest.skip('not a git clone')
    repo = tmp_path/'clone'
    run(['git', 'clone', '-q', str(ROOT), str(repo)], tmp_path)
    check = ['bash', 'scripts/check_sync.sh']
    run(check, repo, check=False)   # whatever the last commit holds, start from an exported, clean commit
    run(['git', 'add', '-A'], repo)
    run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '--allow-empty', '-m', 'sync'], repo)
    assert run(check, repo, env={'CI': 'true'}, check=False).returncode == 0, 'a clean commit passes'
    from execnb.nbio import read_nb, write_nb
    path = repo/'nbs'/'00_utils.ipynb'
    nb = read_nb(path)
    export = next(c for c in nb.cells if c.cell_type == 'code' and c.source.startswith('#| export'))
    export.source += '\n\ndef added_but_not_exported(): pass'
    write_nb(nb, path)
    res = run(check, repo, check=False)
    assert res.returncode and 'out of sync' in res.stdout and 'easyanimate/utils.py' in res.stdout
    assert run(check, repo, check=False).returncode == 0, 'the check exported it, as nbdev_export would'
    assert run(check, repo, env={'CI': 'true'}, check=False).returncode, 'but on CI it must also be committed'
    nb = read_nb(path)
    nb.cells[0].metadata['collapsed'] = True
    write_nb(nb, path)
    res = run(check, repo, check=False)
    assert res.returncode and 'not clean' in res.stdout and 'nbs/00_utils.ipynb' in res.stdout
    (repo/'easyanimate'/'leftover.py').write_text('# AUTOGENERATED! DO NOT EDIT! File to edit: ../nbs/99_gone.ipynb.\n')
    res = run(check, repo, check=False)
    assert res.returncode and 'nbs/99_gone.ipynb, which no longer exists' in res.stdout

def test_nbdev_test_skips_gpu_slow_and_notest_cells_and_nothing_else(tiny_project):
    nbs = tiny_project/'nbs'
    flagged = [('code', f'#| {flag}\nraise RuntimeError("a {flag} cell ran")') for flag in ('gpu', 'slow', 'notest')]
    (nbs/'03_flags.ipynb').write_text(notebook(('md', '# Flags'), *flagged, ('code', 'ran = True')))
    (nbs/'04_broken.ipynb').write_text(notebook(('md', '# Broken'), ('code', 'raise RuntimeError("unflagged")')))
    res = run([BIN/'nbdev_test', '--n_workers', '0', '--file_glob', '0[34]_*.ipynb'], tiny_project, check=False)
    assert res.returncode and '04_broken.ipynb' in res.stderr and '03_flags.ipynb' not in res.stderr, res.stderr

def test_without_execute_a_cell_with_imports_runs_out_of_context_as_in_nbdev_docs(tiny_project):
    nbs = tiny_project/'nbs'
    (nbs/'03_context.ipynb').write_text(notebook(
        ('md', '# Context'), ('code', '#| export\ndef f(): return 1'), ('code', 'y = 2'), ('code', 'import math\nz = y * math.pi')))
    site = [sys.executable, ROOT/'scripts'/'render_docs.py', 'site', '--out', tiny_project/'_docs', nbs/'03_context.ipynb']
    res = run(site, tiny_project, check=False)
    assert res.returncode and "name 'y' is not defined" in res.stderr and 'keep imports in cells of their own' in res.stderr
    run(site + ['--execute'], tiny_project)
    assert '<h3 id="f">' in (tiny_project/'_docs'/'context.html').read_text()
