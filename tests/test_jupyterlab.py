"""The chat widget and two walkthrough notebooks in a real JupyterLab, driven as a person would in headless Chromium.

Needs Debian's `chromium` (or OCK_CHROMIUM=/path/to/chrome) and the `playwright` Python package (its own browser
download is not used); `.ci/install` installs both. JupyterLab runs on 127.0.0.1 with a token and its own config,
data, runtime, settings and workspace folders, so nothing of the user's Jupyter setup is read or written. On a
failure a screenshot is saved and its path printed. OCK_LAB_PYTHONPATH points the kernel at another tree (e.g. an
older checkout, to see these tests fail on it); the default is this repository.

"Mid-reply" is a state, not a race: the notebook sets the widget's `hold`, which pauses a reply after a number of
tokens until Stop or Reset. `delay` (a wait before each token) lets the browser see the reply grow."""
import importlib.util, json, os, platform, re, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import pytest
from conftest import free_port

pw = pytest.importorskip('playwright.sync_api')
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get('OCK_CHROMIUM', '/usr/bin/chromium')
if not Path(CHROMIUM).exists(): pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set OCK_CHROMIUM)",
                                            allow_module_level=True)
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']
LIMIT = 120_000            # ms: the most any single step may take (a hang guard, not a timing assumption)
pytestmark = pytest.mark.timeout(600)

def _tracked():
    "The repository's tracked files (git ls-files), or failing that its library, notebooks, recipes and settings."
    try: return subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True).stdout.decode().split('\0')[:-1]
    except (OSError, subprocess.CalledProcessError):
        return ([str(f.relative_to(ROOT)) for d in ('openchatkit', 'nbs', 'recipes') for f in (ROOT/d).rglob('*') if f.is_file()]
                + ['settings.ini'])

NOTEBOOK_TREE = _tracked()     # a checkout as a user has it: the notebooks read ../recipes, ../openchatkit/assets etc.
# Run All in the browser on these; OCK_LAB_NOTEBOOKS=all runs every notebook in nbs/ (and --durations=0 lists each time)
# by default: a walkthrough; the one with gpu, download and 8-bit cells
_nbs = os.environ.get('OCK_LAB_NOTEBOOKS', '01_conversation.ipynb 30_inference.ipynb')
RUN_ALL = sorted(Path(f).name for f in NOTEBOOK_TREE if f.startswith('nbs/') and f.endswith('.ipynb')) if _nbs == 'all' else _nbs.split()

def _cell(src): return {'cell_type': 'code', 'execution_count': None, 'id': f'c{abs(hash(src)) % 10**8}', 'metadata': {},
                        'outputs': [], 'source': src}

def _notebook(path, cells):
    nb = {'cells': [_cell(c) for c in cells],
          'metadata': {'kernelspec': {'display_name': 'Python 3 (ipykernel)', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb, indent=1))

def _settings(d: Path):
    "Lab settings for a quiet, deterministic page: no news or update checks, every cell in the DOM."
    for ext, name, val in [('@jupyterlab/apputils-extension', 'notification', {'fetchNews': 'false', 'checkForUpdates': False}),
                           ('@jupyterlab/notebook-extension', 'tracker', {'windowingMode': 'none'})]:
        (d/ext).mkdir(parents=True, exist_ok=True)
        (d/ext/f'{name}.jupyterlab-settings').write_text(json.dumps(val))

@pytest.fixture(scope='module')
def lab():
    "A JupyterLab server on 127.0.0.1 over a temporary copy of the checkout, plus chat.ipynb."
    tmp = Path(tempfile.mkdtemp(prefix='ock-lab-'))
    work = tmp/'root'
    for f in NOTEBOOK_TREE:                   # the notebooks' last cell runs nbdev_export: into this copy
        (work/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT/f, work/f)
    _notebook(work/'chat.ipynb', ["from openchatkit.widget import ChatWidget\nw = ChatWidget()\nw",
                                  "w.sample.value = False   # greedy: the same replies on every run\n"
                                  "w.delay = 0.02          # let the browser see each token"])
    _settings(tmp/'settings')
    port, token = free_port(), os.urandom(12).hex()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp/'config'), 'JUPYTER_DATA_DIR': str(tmp/'data'),
           'JUPYTER_RUNTIME_DIR': str(tmp/'runtime'), 'JUPYTERLAB_SETTINGS_DIR': str(tmp/'settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(tmp/'workspaces'), 'IPYTHONDIR': str(tmp/'ipython'), 'MPLCONFIGDIR': str(tmp/'mpl'),
           'PYTHONPATH': os.environ.get('OCK_LAB_PYTHONPATH', str(ROOT)) + os.pathsep + os.environ.get('PYTHONPATH', ''),
           'PATH': str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''),
           'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    log = open(tmp/'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={work}', '--LabApp.news_url=None',
                             '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.extension_manager=readonly',
                             '--ServerApp.terminals_enabled=False']
                            + (['--allow-root'] if hasattr(os, 'geteuid') and os.geteuid() == 0 else []),
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f'http://127.0.0.1:{port}'
    for _ in range(600):                 # up to a minute for the server to answer
        if proc.poll() is not None: pytest.fail(f"jupyter lab exited: {(tmp/'lab.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2)
            break
        except OSError: time.sleep(0.1)
    else: pytest.fail("jupyter lab did not answer within a minute")
    yield dict(url=url, token=token, tmp=tmp, work=work)
    proc.terminate()
    try: proc.wait(20)
    except subprocess.TimeoutExpired: proc.kill()
    log.close()

@pytest.fixture
def page(lab, request):
    "A fresh headless Chromium (new empty profile); a screenshot is saved when the test fails."
    with pw.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(prefix='ock-chromium-'), executable_path=CHROMIUM, headless=True,
                                                   args=ARGS, viewport={'width': 1280, 'height': 900})
        pg = ctx.new_page()
        pg.set_default_timeout(LIMIT)
        failed = request.session.testsfailed
        yield pg
        if request.session.testsfailed > failed:                  # this test's call failed (reported before teardown)
            shot = Path(tempfile.mkdtemp(prefix='ock-lab-shot-'))/f'{request.node.name}.png'
            try:
                pg.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot of the failure: {shot}\nserver log: {lab['tmp']/'lab.log'}")
            except Exception as e: print(f"\nno screenshot ({e})")
        ctx.close()

def shutdown_kernels(lab):
    "Shut down every kernel the server runs (each notebook opened starts one, and they outlive the page)."
    api = f"{lab['url']}/api/kernels"
    for k in json.load(urllib.request.urlopen(f"{api}?token={lab['token']}", timeout=30)):
        urllib.request.urlopen(urllib.request.Request(f"{api}/{k['id']}?token={lab['token']}", method='DELETE'), timeout=60)

@pytest.fixture
def kernels_down(lab):
    "After the test, shut down the kernels it started."
    yield
    shutdown_kernels(lab)

NB = '.jp-NotebookPanel:not(.lm-mod-hidden)'          # the notebook on show

def open_notebook(page, lab, name):
    "Open `name` in a fresh workspace; returns when its kernel is idle."
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(f'{NB} .jp-Cell')
    page.locator('.jp-StatusBar-TextItem', has_text='| Idle').wait_for()

def run_all(page):
    "Run ▸ Run All Cells, from the menu; returns when every code cell has run, or one failed."
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    page.wait_for_function(f"""() => {{ const ps = [...document.querySelectorAll('{NB} .jp-CodeCell .jp-InputPrompt')]"""
                           f""".map(p => p.textContent);
                               return ps.some(p => /\\[\\d+\\]/.test(p)) && !ps.some(p => p.includes('*')); }}""",
                           timeout=600_000)      # something ran and nothing is queued: all ran, or Run All stopped at an error

def run_code(page, code, expect):
    "Type `code` into the notebook's last cell and run it (Ctrl+Enter); returns its output once it contains `expect`."
    cell = page.locator(f'{NB} .jp-CodeCell').last
    ed = cell.locator('.cm-content')      # aimed at the editor itself: a widget that takes the focus back (its input
    ed.fill(code)
    ed.press('Control+Enter')   # is enabled again when a reply ends) must not catch these keys
    out = cell.locator('.jp-OutputArea-output', has_text=expect)
    out.wait_for()
    return out.inner_text().strip()

def error_outputs(page):
    "Text of every traceback or warning in the notebook on show (log lines on stderr, e.g. loguru's INFO, are not counted)."
    outs = page.eval_on_selector_all(f'{NB} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
                                     f'{NB} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]',
                                     'els => els.map(e => e.innerText)')
    return [o for o in outs if re.search(r'Traceback|Error|Warning', o)]

NOISE = re.compile(r'\d+%\||Loading weights|Failed to load|\{target=')     # a progress bar, library noise, a link drawn as text
def noise_outputs(page):
    "Outputs of any kind that a reader should not see: progress bars (as text or as a widget) and library noise."
    outs = page.eval_on_selector_all(f'{NB} .jp-OutputArea-output', 'els => els.map(e => e.innerText)')
    outs = [re.sub(r'[\u2007\u00a0]', ' ', o) for o in outs]            # tqdm's widget bar pads with figure spaces
    bars = page.locator(f'{NB} .jp-OutputArea-output [class*="progress"], {NB} .jp-OutputArea-output progress').count()
    return [o[:200] for o in outs if NOISE.search(o)] + [f'{bars} progress bar widget(s)'] * bool(bars)

_spec = importlib.util.spec_from_file_location('nbclean', ROOT/'tools'/'nbclean.py')
NBCLEAN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(NBCLEAN)     # the metadata the notebooks store
DIRTY = '.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current.jp-mod-dirty'      # the notebook on show is marked modified

# -- the chat widget -----------------------------------------------------------------------------------------------
QUESTIONS = ['What is 12 plus 30?', 'What is the capital of France?', 'How are you?', 'Who are you?',
             'What is 7 plus 5?', 'What is the capital of Italy?', 'Hello!', 'What is 20 plus 22?']
RECORD = """() => { window.__ock = []; const t = document.querySelector('.ock-transcript');
  new MutationObserver(() => { const bots = t.querySelectorAll('.ock-bot'), b = bots[bots.length - 1];
    window.__ock.push({n: bots.length, pending: !!(b && b.classList.contains('ock-pending')), text: b ? b.innerText : ''}); })
  .observe(t, {subtree: true, childList: true, characterData: true}); }"""
DONE = """n => document.querySelectorAll('.ock-chat .ock-bot').length === n && !document.querySelector('.ock-chat .ock-pending')
             && !document.querySelector('.ock-input input').disabled"""
HELD = """() => { const p = document.querySelector('.ock-chat .ock-pending'), s = document.querySelector('.ock-status');
               return !!p && /Bot:\\s*\\S/.test(p.innerText) && s.innerText.startsWith('paused after 2 tokens'); }"""

def box(page, sel): return page.locator(sel).bounding_box()

def check_in_view(page):
    "The newest message is inside the transcript's visible box, and the transcript is not under the input row."
    t, row, m = box(page, '.ock-transcript'), box(page, '.ock-input-row'), page.locator('.ock-chat .ock-msg').last.bounding_box()
    assert t['y'] - 1 <= m['y'] and m['y'] + m['height'] <= t['y'] + t['height'] + 1, (m, t)
    assert t['y'] + t['height'] <= row['y'] + 1 and m['y'] + m['height'] <= row['y'] + 1, (m, t, row)

CONTROLS = """() => { const s = [...document.querySelectorAll('.ock-chat .widget-slider')]\
.find(e => e.innerText.includes('max new tokens'));
  const cut = [...document.querySelectorAll('.ock-chat .widget-label, .ock-chat .widget-label-basic, .ock-chat button')]
    .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).map(e => e.innerText);
  return {max: Number(s.querySelector('[aria-valuemax]').getAttribute('aria-valuemax')), cut: cut}; }"""

def check_settings(page, context):
    "Open Settings: no label or button is cut off, and the max-tokens slider ends at the model's context; close it again."
    header = page.locator('.ock-chat .jupyter-widget-Collapse-header', has_text='Settings')
    header.click()
    page.locator('.ock-chat .widget-slider', has_text='max new tokens').wait_for()
    c = page.evaluate(CONTROLS)
    assert c['cut'] == [] and c['max'] == context, (c, context)
    header.click()
    page.locator('.ock-chat .widget-slider', has_text='max new tokens').wait_for(state='hidden')

def send(page, text, how):
    inp = page.locator('.ock-input input')
    inp.fill(text)
    if how == 'enter': inp.press('Enter')
    else: page.locator('.ock-send').click()

def test_chat_widget(lab, kernels_down, page):
    "Eight questions with Enter and Send, Stop in the middle of the third reply, blur, Reset in the middle of a reply."
    open_notebook(page, lab, 'chat.ipynb')
    run_all(page)
    assert error_outputs(page) == []
    assert all(re.fullmatch(r'\[\d+\]:', p)
               for p in page.eval_on_selector_all(f'{NB} .jp-CodeCell .jp-InputPrompt', 'els => els.map(e => e.textContent)'))
    page.wait_for_selector('.ock-chat')
    assert noise_outputs(page) == []                          # no weight-loading bar above the chat
    check_settings(page, int(run_code(page, "print('context', w.model.context_length)", 'context').split()[1]))
    page.evaluate(RECORD)
    n = 0                                                    # replies in the transcript
    for i, q in enumerate(QUESTIONS):
        how = 'enter' if i % 2 == 0 else 'send'
        if i == 2:                                           # Stop in the middle of the third reply
            run_code(page, "w.hold = 2; print('hold', w.hold)", 'hold 2')
            send(page, q, how)
            page.wait_for_function(HELD)
            assert page.locator('.ock-input input').is_disabled() and page.locator('.ock-send').is_disabled()
            page.locator('.ock-stop').click()
            n += 1
            page.wait_for_function(DONE, arg=n)
            assert page.locator('.ock-chat .ock-bot').last.inner_text().endswith('[stopped]')
            assert page.inner_text('.ock-status').strip() == 'stopped after 2 tokens'
            assert run_code(page, "w.hold = None; print('tokens', w.model.last.new_tokens, w.busy)", 'tokens') == 'tokens 2 False'
            assert page.locator('.ock-stop').is_disabled()
            check_in_view(page)
            continue
        if i == 4:                                           # typing, then clicking elsewhere, sends nothing
            page.locator('.ock-input input').fill(q)
            page.locator('.ock-status').click()
            assert run_code(page, "print('messages', len(w.messages))", 'messages') == f'messages {2 * n}'
            assert page.locator('.ock-input input').input_value() == q and page.locator('.ock-chat .ock-msg').count() == 2 * n
        page.evaluate('() => { window.__ock = []; }')
        send(page, q, how)
        n += 1
        page.wait_for_function(DONE, arg=n)
        frames = page.evaluate('() => window.__ock')
        assert any(f['n'] == n and f['pending'] and re.match(r'Bot:\s*\S', f['text']) for f in frames), (q, frames)   # it streamed
        assert page.locator('.ock-chat .ock-user').last.inner_text() == f'You: {q}'
        assert page.locator('.ock-input input').input_value() == ''
        check_in_view(page)
    assert page.evaluate("() => { const t = document.querySelector('.ock-transcript'); return t.scrollHeight > t.clientHeight; }")
    # Reset in the middle of a reply: the reply stops, then the transcript and the conversation are empty
    run_code(page, "w.hold = 2; print('hold', w.hold)", 'hold 2')
    send(page, 'One more question?', 'enter')
    page.wait_for_function(HELD)
    page.locator('.ock-reset').click()
    page.wait_for_function("() => document.querySelectorAll('.ock-chat .ock-msg').length === 0 "
                           "&& !document.querySelector('.ock-input input').disabled")
    assert run_code(page, "w.hold = None; print('turns', len(w.conv.turns), len(w.messages), w.busy)", 'turns') == 'turns 0 0 False'
    assert page.locator('.ock-chat .ock-msg').count() == 0
    send(page, QUESTIONS[0], 'send')
    page.wait_for_function(DONE, arg=1)
    assert page.locator('.ock-chat .ock-msg').count() == 2
    assert error_outputs(page) == []

# -- walkthrough notebooks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', RUN_ALL)
def test_run_all(lab, kernels_down, page, name):
    "Opened, it is not marked modified; Run ▸ Run All Cells: every cell runs, no error or warning output, no noise."
    open_notebook(page, lab, f'nbs/{name}')
    if NBCLEAN.LANGUAGE_INFO['version'] == platform.python_version():   # on the project's Python, opening changes nothing
        with pytest.raises(pw.TimeoutError): page.locator(DIRTY).wait_for(timeout=3000)
    else: print(f"not checked: the notebooks store language_info for Python {NBCLEAN.LANGUAGE_INFO['version']}, "
                f"the kernel runs {platform.python_version()}")
    run_all(page)
    assert error_outputs(page) == []
    assert noise_outputs(page) == []            # no progress bars, no library chatter, show_doc's source link drawn as a link
    assert all(re.fullmatch(r'\[\d+\]:', p)
               for p in page.eval_on_selector_all(f'{NB} .jp-CodeCell .jp-InputPrompt', 'els => els.map(e => e.textContent)'))
