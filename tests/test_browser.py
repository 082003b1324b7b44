"""Browser tests, in a headless Chromium driven over the DevTools protocol: the documentation site (every page loads
without console errors, the index plays a video) and the notebook widget (rendered and used in a real JupyterLab).

Chromium comes from `scripts/install_browser.sh` (Debian's `chromium`, run by `make test`). Without it these tests are
skipped, except on CI (`CI` set), where they fail. Screenshots go to `outputs/screenshots/` (or `$EASYANIMATE_SCREENSHOTS`).
The site checked is `$EASYANIMATE_DOCS` if set, else `_docs/` if it is newer than every notebook (`make docs`), else a
fresh build from the saved outputs (`render_docs.py site`) in a temporary folder.
"""
import base64, functools, http.server, json, os, re, secrets, shutil, signal, socket, subprocess, sys, threading, time, urllib.request
from pathlib import Path

import nbformat, pytest

try: import websocket   # websocket-client, a dev requirement
except ImportError: websocket = None

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))), None)
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--no-default-browser-check',
         '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
         '--mute-audio', '--window-size=1280,1000', '--remote-debugging-port=0']

# --- a small DevTools-protocol client ----------------------------------------------------------------------------

class Chromium:
    "A headless Chromium with its own profile; `page()` opens a tab to drive."
    def __init__(self, exe, profile, timeout=60):
        self.proc = subprocess.Popen([exe, *FLAGS, f'--user-data-dir={profile}', 'about:blank'], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        port_file, end = Path(profile) / 'DevToolsActivePort', time.time() + timeout
        while not (port_file.is_file() and '\n' in port_file.read_text()):
            if self.proc.poll() is not None: raise RuntimeError(f'chromium exited: {self.proc.stderr.read().decode()[-2000:]}')
            if time.time() > end: raise TimeoutError(f'chromium opened no debugging port in {timeout}s')
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def page(self):
        req = urllib.request.Request(f'http://127.0.0.1:{self.port}/json/new?about:blank', method='PUT')
        with urllib.request.urlopen(req, timeout=30) as r: return Page(json.load(r)['webSocketDebuggerUrl'])

    def close(self):
        with_group(self.proc, signal.SIGTERM)

class Page:
    "One tab: run JavaScript, navigate, wait, take screenshots; console errors and exceptions are collected in `events`."
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ('Page', 'Runtime', 'Log'): self.send(f'{domain}.enable')

    def send(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps(dict(id=mine, method=method, params=params)))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == mine:
                if 'error' in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get('result', {})
            if 'method' in msg: self.events.append(msg)

    def js(self, expression, await_promise=False):
        r = self.send('Runtime.evaluate', expression=expression, returnByValue=True, awaitPromise=await_promise)
        if 'exceptionDetails' in r:
            d = r['exceptionDetails']
            raise RuntimeError(f"{expression[:100]!r} threw {d.get('exception', {}).get('description') or d.get('text')}")
        return r['result'].get('value')

    def wait_for(self, expression, timeout, what):
        end = time.time() + timeout
        while True:
            value = self.js(expression)
            if value: return value
            if time.time() > end: raise TimeoutError(f'waited {timeout}s for {what}')
            time.sleep(0.25)

    def goto(self, url, timeout=60):
        self.events.clear()
        frame = self.send('Page.navigate', url=url)
        if frame.get('errorText'): raise RuntimeError(f"{url}: {frame['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout, f'{url} to load')

    def errors(self):
        "Console errors, uncaught exceptions and failed loads since the last `goto`."
        out = []
        for e in self.events:
            m, p = e['method'], e.get('params', {})
            if m == 'Runtime.exceptionThrown':
                d = p['exceptionDetails']
                out.append(d.get('exception', {}).get('description') or d.get('text'))
            elif m == 'Runtime.consoleAPICalled' and p.get('type') in ('error', 'assert'):
                out.append(' '.join(str(a.get('value', a.get('description', ''))) for a in p.get('args', [])))
            elif m == 'Log.entryAdded' and p['entry'].get('level') == 'error':
                out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
        return out

    def screenshot(self, path, full_page=True, element=None):
        "A PNG of the page (all of it, or the viewport), or of the element that the JavaScript expression `element` gives."
        params = dict(format='png', captureBeyondViewport=full_page)
        if element:
            params['clip'] = self.js(f"(() => {{ const e = {element}; e.scrollIntoView(); const r = e.getBoundingClientRect(); "
                                     "return {x: r.x, y: r.y, width: r.width, height: Math.min(r.height, innerHeight - r.y), scale: 1}; })()")
        Path(path).write_bytes(base64.b64decode(self.send('Page.captureScreenshot', **params)['data']))

    def close(self): self.ws.close()

def with_group(proc, sig):
    "Stop a process started with its own session, and everything it started."
    if proc.poll() is None:
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: return
        try: proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait()

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

# --- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    missing = ('Chromium is not installed: `bash scripts/install_browser.sh` (as root: apt-get install chromium) enables the browser tests'
               if CHROMIUM is None else 'websocket-client is not installed: pip install -e ".[dev]"' if websocket is None else None)
    if missing and os.environ.get('CI'): pytest.fail(f'{missing}; on CI the browser tests must run (`make test` installs Chromium)')
    if missing: pytest.skip(missing)
    b = Chromium(CHROMIUM, tmp_path_factory.mktemp('chromium-profile'))
    yield b
    b.close()

@pytest.fixture
def page(browser):
    p = browser.page()
    yield p
    p.close()

@pytest.fixture(scope='module')
def screenshots():
    folder = Path(os.environ.get('EASYANIMATE_SCREENSHOTS', ROOT / 'outputs' / 'screenshots'))
    folder.mkdir(parents=True, exist_ok=True)
    return folder

def _fresh(docs):
    index = docs / 'index.html'
    newest = max(p.stat().st_mtime for p in [*(ROOT / 'nbs').glob('*.ipynb'), ROOT / 'scripts' / 'render_docs.py'])
    return index.is_file() and index.stat().st_mtime > newest

@pytest.fixture(scope='module')
def docs(tmp_path_factory):
    "The rendered site's folder (see the module's docstring for which)."
    if os.environ.get('EASYANIMATE_DOCS'): return Path(os.environ['EASYANIMATE_DOCS'])
    if _fresh(ROOT / '_docs'): return ROOT / '_docs'
    out = tmp_path_factory.mktemp('site') / '_docs'
    res = subprocess.run([sys.executable, 'scripts/render_docs.py', 'site', '--out', str(out)], cwd=ROOT, capture_output=True, text=True)
    if res.returncode: pytest.fail(f'the site does not build (scripts/render_docs.py site):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}')
    return out

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        # browsers ask for /favicon.ico by themselves; the site links none, so that is no error of the site
        if self.path == '/favicon.ico' and not Path(self.translate_path(self.path)).is_file(): return self.send_response(204) or self.end_headers()
        return super().do_GET()

@pytest.fixture(scope='module')
def site(docs):
    "The site served on localhost: its base URL."
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(docs)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}/'
    server.shutdown(); server.server_close()

# --- the documentation site ----------------------------------------------------------------------------------------

SIDEBAR_LINKS = "[...document.querySelectorAll('nav.ea-sidebar li a')].map(a => a.getAttribute('href'))"

def test_every_page_of_the_sidebar_loads_without_console_errors(page, site, docs, screenshots):
    page.goto(site + 'index.html')
    pages = page.js(SIDEBAR_LINKS)
    assert pages and pages[0] == 'index.html', f'the sidebar should start at the index; it lists {pages}'
    assert len(pages) == len(list((ROOT / 'nbs').glob('[!_.]*.ipynb'))), 'one page per notebook'
    problems = {}
    for name in pages:
        if not (docs / name).is_file():
            problems[name] = ['not in the built site (the step that builds the site says why)']
            continue
        page.goto(site + name)
        time.sleep(0.3)   # media and late scripts report their errors after `load`
        title, sidebar, text = page.js("[document.querySelector('h1.ea-title')?.textContent, "
                                       f"{SIDEBAR_LINKS}, document.querySelector('main.ea-page')?.innerText.length || 0]")
        if page.errors(): problems[name] = page.errors()
        if not title or text < 200: problems.setdefault(name, []).append(f'no content (title {title!r}, {text} characters)')
        if sidebar != pages: problems.setdefault(name, []).append(f'its sidebar differs: {sidebar}')
        page.screenshot(screenshots / f"docs-{Path(name).stem}.png")
    assert not problems, '\n'.join(f'{k}: {v}' for k, v in problems.items())

# Waits poll for up to 15 s rather than a fixed time: on a loaded 2-core machine the browser can take seconds to decode.
PLAY_VIDEOS = """(async () => {
  const waitFor = async (done, ms = 15000) => { for (let t = 0; t < ms && !done(); t += 100) await new Promise(ok => setTimeout(ok, 100)); };
  const report = [];
  for (const v of document.querySelectorAll('video')) {
    v.scrollIntoView();
    await waitFor(() => v.readyState >= 2 || v.error);
    v.muted = true;
    let played = null;
    try { const t = v.currentTime; await v.play(); await waitFor(() => v.currentTime !== t || v.error); played = v.currentTime !== t;
          await waitFor(() => v.readyState >= 2 || v.error); }
    catch (e) { played = String(e); }
    report.push({src: (v.currentSrc || '').slice(0, 80), readyState: v.readyState, error: v.error && v.error.message,
                 width: v.videoWidth, duration: v.duration, played});
  }
  return report;
})()"""

def test_the_index_plays_a_video(page, site, screenshots):
    page.goto(site + 'index.html')
    videos = page.send('Runtime.evaluate', expression=PLAY_VIDEOS, awaitPromise=True, returnByValue=True)['result']['value']
    page.screenshot(screenshots / 'docs-index-video.png', full_page=False)
    assert videos, 'the index shows no <video>: the design asks for clips of the demo model on the front page (nbs/index.ipynb)'
    for v in videos:
        assert v['error'] is None and v['readyState'] >= 2 and v['width'] > 0 and v['duration'] > 0 and v['played'] is True, v
    assert not page.errors(), page.errors()

# --- the widget in JupyterLab --------------------------------------------------------------------------------------

def widget_notebook(folder):
    "The widget chapter up to the cell that shows the form, plus one cell keeping the run short."
    nb = nbformat.read(ROOT / 'nbs' / '15_ui.ipynb', as_version=4)
    shows = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code' and re.search(r'GeneratorUI\(\)\s*\nui\s*$', c.source)]
    assert shows, 'nbs/15_ui.ipynb should have a cell `ui = GeneratorUI()` / `ui` that shows the form'
    nb.cells = nb.cells[:shows[0] + 1] + [nbformat.v4.new_code_cell('ui.steps.value, ui.frames.value = 2, 4')]
    nbformat.write(nb, folder / 'ui.ipynb')

@pytest.fixture
def jupyterlab(tmp_path):
    "A JupyterLab on localhost serving `tmp_path`, with `window.jupyterapp` exposed; yields (base URL, token, folder)."
    widget_notebook(tmp_path)
    settings = tmp_path / '.lab-settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)
    (settings / 'notification.jupyterlab-settings').write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path / '.jupyter'), 'JUPYTER_RUNTIME_DIR': str(tmp_path / '.runtime'),
           'IPYTHONDIR': str(tmp_path / '.ipython'), 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    log = open(tmp_path / 'jupyterlab.log', 'w')
    lab = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', '--ip=127.0.0.1', f'--port={port}',
                            f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={tmp_path}', '--LabApp.expose_app_in_browser=True',
                            '--LabApp.news_url=', '--LabApp.extension_manager=readonly', f'--LabServerApp.user_settings_dir={tmp_path / ".lab-settings"}',
                            f'--LabServerApp.workspaces_dir={tmp_path / ".lab-workspaces"}'],
                           cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=5).close()
                break
            except OSError:
                if lab.poll() is not None or time.time() > end:
                    pytest.fail(f'JupyterLab did not start:\n{(tmp_path / "jupyterlab.log").read_text()[-3000:]}')
                time.sleep(0.5)
        yield f'http://127.0.0.1:{port}/', token, tmp_path
    finally:
        with_group(lab, signal.SIGTERM)
        log.close()

NOTEBOOK = "[...jupyterapp.shell.widgets('main')].find(w => w.context && w.context.path === 'ui.ipynb')"
KERNEL_IDLE = f"window.jupyterapp && (() => {{ const k = {NOTEBOOK}?.sessionContext?.session?.kernel; return k && k.status === 'idle'; }})()"
GENERATE = "[...document.querySelectorAll('.jupyter-widgets button')].find(b => b.textContent.trim() === 'Generate')"
WIDGET_VIDEO = "document.querySelector('.jupyter-widgets video')"

def test_the_widget_renders_and_generates_in_jupyterlab(page, jupyterlab, screenshots):
    url, token, folder = jupyterlab
    page.goto(f'{url}lab/tree/ui.ipynb?token={token}', timeout=120)
    page.wait_for(KERNEL_IDLE, 180, 'the notebook to open with an idle kernel')
    page.js("jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for(f"!!{GENERATE}", 180, 'the widget to render with its Generate button')
    labels = page.js("[...document.querySelectorAll('.jupyter-widgets .widget-label')].map(l => l.textContent.trim())")
    assert {'prompt', 'negative prompt', 'sampler', 'steps', 'guidance', 'seed', 'size', 'frames', 'fps'} <= set(labels), labels
    page.screenshot(screenshots / 'jupyterlab-widget.png', full_page=False)
    page.js("document.querySelector('.jupyter-widgets textarea').focus()")
    page.send('Input.insertText', text='a red circle moving to the right')
    page.js(f"{GENERATE}.click()")
    page.wait_for(f"(() => {{ const v = {WIDGET_VIDEO}; return v && v.readyState >= 2 && !v.error && v.videoWidth > 0; }})()", 180,
                  'the generated video to play in the widget')
    time.sleep(0.5)
    page.screenshot(screenshots / 'jupyterlab-widget-result.png', full_page=False)
    page.screenshot(screenshots / 'widget.png', element=f"{GENERATE}.closest('.jp-OutputArea-output')")
    saved = folder / 'samples' / 'easyanimate-videos' / '00000001.mp4'
    assert saved.is_file(), sorted(str(p.relative_to(folder)) for p in folder.rglob('*.mp4'))
    src, href = page.js(f"[{WIDGET_VIDEO}.getAttribute('src'), document.querySelector('.jupyter-widgets a[download]').getAttribute('href')]")
    assert src == href == 'data:video/mp4;base64,' + base64.b64encode(saved.read_bytes()).decode()
    assert 'a red circle moving to the right' in page.js("document.querySelector('.jupyter-widgets code').textContent"), 'typed text reached the kernel'
