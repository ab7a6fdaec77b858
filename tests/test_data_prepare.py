"""`ock-prepare-data` and URL reading as a user meets them: downloads from a local HTTP server (with an
interrupted download resumed by an HTTP Range request), a local directory standing in for the hub, `--stats`,
and one-line errors for bad input. Never the network."""
import sys, json, shutil, subprocess, threading, http.server
from pathlib import Path
import pytest
import conftest

from openchatkit.data import download_url, read_jsonl, write_jsonl, PackedStream
from openchatkit.core import OCKError

pytestmark = pytest.mark.timeout(180)
ENV = {**conftest.ENV, 'NO_COLOR': '1'}
SCRIPT = shutil.which('ock-prepare-data') or str(Path(sys.executable).parent/'ock-prepare-data')


class _Handler(http.server.SimpleHTTPRequestHandler):
    "Static files with `Range: bytes=N-` support; `cut` makes the next full GET of a path stop after so many bytes."
    cut, seen = {}, []
    def log_message(self, *a): pass
    def do_GET(self):
        p = Path(self.directory)/self.path.lstrip('/')
        if not p.is_file(): return self.send_error(404)
        data, rng = p.read_bytes(), self.headers.get('Range')
        self.seen.append((self.path, rng))
        start = int(rng.split('=')[1].split('-')[0]) if rng else 0
        if start >= len(data) and rng: return self.send_error(416)
        self.send_response(206 if rng else 200)
        if rng: self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        self.send_header('Content-Length', str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if not rng and self.path in self.cut:
            body = body[:self.cut.pop(self.path)]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path/'www'
    root.mkdir()
    h = lambda *a, **k: _Handler(*a, directory=str(root), **k)
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.cut.clear()
    _Handler.seen.clear()
    yield root, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()


def _docs(n): return [f"<human>: What is {i} plus {i + 1}?\n<bot>: {i} plus {i + 1} is {2 * i + 1}." for i in range(n)]


def run(*args, cwd=None):
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)


def test_download_resumes_with_range(server, tmp_path):
    root, url = server
    src = write_jsonl(root/'chat.jsonl.gz', _docs(3000))
    _Handler.cut['/chat.jsonl.gz'] = src.stat().st_size // 3
    with pytest.raises(OCKError, match='interrupted'):
        download_url(f'{url}/chat.jsonl.gz', tmp_path/'out', progress=False)
    part = tmp_path/'out'/'chat.jsonl.gz.part'
    assert part.stat().st_size == src.stat().st_size // 3 and not (tmp_path/'out'/'chat.jsonl.gz').exists()
    out = download_url(f'{url}/chat.jsonl.gz', tmp_path/'out', progress=False)
    assert _Handler.seen[-1] == ('/chat.jsonl.gz', f'bytes={src.stat().st_size // 3}-')   # resumed, not restarted
    assert out.read_bytes() == src.read_bytes() and not part.exists()
    assert len(list(read_jsonl(out))) == 3000


def test_download_errors(server, tmp_path):
    root, url = server
    with pytest.raises(OCKError, match='HTTP 404'): download_url(f'{url}/missing.jsonl', tmp_path, progress=False)
    with pytest.raises(OCKError, match='download failed'): download_url('http://127.0.0.1:9/x.jsonl', tmp_path, progress=False)


def test_stream_from_url(server):
    root, url = server
    write_jsonl(root/'a.jsonl.zst', _docs(200))
    write_jsonl(root/'b.jsonl', ['plain text'] * 50)
    r = read_jsonl(f'{url}/a.jsonl.zst')
    assert [x['text'] for x in r] == _docs(200)
    from openchatkit.tiny import train_tokenizer
    tok = train_tokenizer(_docs(50), vocab_size=300)
    # a URL with a port, with and without a weight, in OpenChatKit's syntax
    s = PackedStream(f'{url}/a.jsonl.zst:2,{url}/b.jsonl', tok, 16, shuffle_buffer=64)
    blocks = [b for _, b in zip(range(200), s)]
    assert len(blocks) == 200 and s.state_dict()['sources'][1]['epoch'] >= 1


def test_cli_url_and_stats(server, tmp_path):
    root, url = server
    write_jsonl(root/'unified_chip2.jsonl', _docs(100))
    r = run(f'{url}/unified_chip2.jsonl', '--data-root', tmp_path/'data')
    assert r.returncode == 0, r.stderr
    out = tmp_path/'data'/'unified_chip2'/'unified_chip2.jsonl'
    assert out.read_bytes() == (root/'unified_chip2.jsonl').read_bytes()
    assert str(out.parent) in r.stdout
    with open(out, 'a') as f: f.write('{"text": 5}\n\n')
    r = run('--stats', out.parent, '--samples', '1')
    assert r.returncode == 0, r.stderr
    assert '1 file(s), 100 records, 2 bad records skipped' in r.stdout and "'text' is not a string" in r.stdout
    assert '<human>: What is 0 plus 1?' in r.stdout
    r = run('--stats', out, '--strict')
    assert r.returncode == 2 and r.stderr.strip() == f"error: {out}:101: 'text' is not a string (int) (strict mode)"


def test_cli_presets_from_mirror(tmp_path):
    hub = tmp_path/'hub'/'laion'/'OIG'
    hub.mkdir(parents=True)
    write_jsonl(hub/'unified_chip2.jsonl', _docs(10))
    write_jsonl(hub/'unified_p3.jsonl.gz', _docs(20))
    (hub/'README.md').write_text('card')
    env = {**ENV, 'OCK_HUB_MIRROR': str(tmp_path/'hub'), 'OCK_DATA_DIR': str(tmp_path/'data')}
    r = subprocess.run([SCRIPT, 'oig', '--unpack'], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path/'data'/'OIG'/'files').iterdir())
    assert files == ['unified_chip2.jsonl', 'unified_p3.jsonl']
    r = subprocess.run([SCRIPT, '--stats', 'oig:0.3,oig'], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and '4 file(s), 60 records' in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize('args,msg', [
    (['oig-chat'], "error: unknown preset 'oig-chat'"),
    (['--stats', 'missing.jsonl'], 'error: no such file or directory: missing.jsonl'),
    (['--stats', 'a.jsonl:abc'], "error: mixture item 'a.jsonl:abc': weight 'abc' is not a number"),
    (['--stats', 'a.jsonl:0'], "error: mixture item 'a.jsonl:0': weight must be a number > 0"),
    (['--stats', 'a.jsonl,,a.jsonl'], 'error: mixture item 2 is empty'),
    (['--stats', 'oig'], "error: preset 'oig' is not prepared yet"),
    ([], 'error: give a SOURCE'),
    (['--bogus'], 'error: unrecognized arguments: --bogus'),
])
def test_cli_errors_are_one_line(tmp_path, args, msg):
    write_jsonl(tmp_path/'a.jsonl', _docs(3))
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith(msg) and r.stderr.count('\n') == 1, r.stderr


class _Hub(http.server.BaseHTTPRequestHandler):
    "Just enough of the Hugging Face hub's HTTP API for `snapshot_download` of a dataset repo kept in `root`."
    root, sha, log = None, 'a' * 40, []
    def log_message(self, *a): pass
    def _json(self, obj):
        b = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def _files(self, repo):
        d = Path(self.root)/repo
        return sorted(p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file()) if d.is_dir() else None
    def _route(self, head=False):
        from urllib.parse import urlparse, unquote
        path = unquote(urlparse(self.path).path)
        self.log.append((self.command, path))
        parts = path.strip('/').split('/')
        if parts[:2] == ['api', 'datasets'] and len(parts) >= 4:
            repo, files = '/'.join(parts[2:4]), self._files('/'.join(parts[2:4]))
            if files is None:
                self.send_response(404)
                self.send_header('X-Error-Code', 'RepoNotFound')
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            if len(parts) == 4 or parts[4] == 'revision':
                return self._json({'id': repo, 'sha': self.sha, 'siblings': [{'rfilename': f} for f in files]})
            if parts[4] == 'tree':
                return self._json([{'type': 'file', 'path': f, 'size': (Path(self.root)/repo/f).stat().st_size,
                                    'oid': f'{i:040x}'} for i, f in enumerate(files)])
        if parts[0] == 'datasets' and len(parts) >= 6 and parts[3] == 'resolve':
            f = Path(self.root)/'/'.join(parts[1:3])/'/'.join(parts[5:])
            if f.is_file():
                data = f.read_bytes()
                self.send_response(200)
                self.send_header('Content-Length', str(len(data)))
                self.send_header('X-Repo-Commit', self.sha)
                self.send_header('ETag', f'"{len(data):08x}{f.name}"')
                self.end_headers()
                if not head: self.wfile.write(data)
                return
        self.send_response(404)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def do_GET(self): self._route()
    def do_HEAD(self): self._route(head=True)


def test_cli_hub_dataset_through_snapshot_download(tmp_path):
    "The real `huggingface_hub.snapshot_download` path, against a local stand-in of the hub's HTTP API."
    repo = tmp_path/'hub'/'laion'/'OIG'
    repo.mkdir(parents=True)
    write_jsonl(repo/'unified_chip2.jsonl', _docs(10))
    write_jsonl(repo/'unified_p3.jsonl.gz', _docs(20))
    (repo/'README.md').write_text('card')
    _Hub.root, _Hub.log = str(tmp_path/'hub'), []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Hub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {**ENV, 'HF_HUB_OFFLINE': '0', 'HF_ENDPOINT': f'http://127.0.0.1:{srv.server_address[1]}',
           'HF_HOME': str(tmp_path/'hf'), 'HF_HUB_DISABLE_TELEMETRY': '1', 'OCK_DATA_DIR': str(tmp_path/'data')}
    try:
        r = subprocess.run([SCRIPT, 'oig', '--include', 'unified_p3*', '--unpack'], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        got = sorted(p.relative_to(tmp_path/'data'/'OIG'/'files').as_posix() for p in (tmp_path/'data'/'OIG'/'files').rglob('*')
                     if p.is_file() and '.cache' not in p.parts)
        assert got == ['unified_p3.jsonl'], got
        assert [x['text'] for x in read_jsonl(tmp_path/'data'/'OIG'/'files'/'unified_p3.jsonl')] == _docs(20)
        assert ('GET', '/datasets/laion/OIG/resolve/' + 'a' * 40 + '/unified_chip2.jsonl') not in _Hub.log   # only what was asked
        r = subprocess.run([SCRIPT, 'someone/missing'], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.startswith("error: no dataset 'someone/missing' on the Hugging Face hub"), r.stderr
    finally:
        srv.shutdown()
        srv.server_close()


def test_unreachable_url_is_one_line_error(server):
    root, url = server
    with pytest.raises(OCKError, match='cannot read .*missing.jsonl: HTTP 404'): list(read_jsonl(f'{url}/missing.jsonl'))


def test_stream_hub_dataset_without_download(tmp_path, monkeypatch):
    "`hf://datasets/...` mixture items list the repo through the hub API and stream its files (local stand-in hub)."
    from huggingface_hub import constants
    repo = tmp_path/'hub'/'laion'/'OIG'
    (repo/'sub').mkdir(parents=True)
    write_jsonl(repo/'unified_chip2.jsonl', _docs(30))
    write_jsonl(repo/'sub'/'unified_p3.jsonl.zst', _docs(40))
    (repo/'README.md').write_text('card')
    _Hub.root, _Hub.log = str(tmp_path/'hub'), []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Hub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ep = f'http://127.0.0.1:{srv.server_address[1]}'
    monkeypatch.setattr(constants, 'ENDPOINT', ep)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    try:
        from openchatkit.data import parse_mixture, hub_files
        assert hub_files('hf://datasets/laion/OIG') == [f'{ep}/datasets/laion/OIG/resolve/main/sub/unified_p3.jsonl.zst',
                                                         f'{ep}/datasets/laion/OIG/resolve/main/unified_chip2.jsonl']
        m = parse_mixture('hf://datasets/laion/OIG/unified_chip2*:3,hf://datasets/laion/OIG@main/sub/*.zst')
        assert [len(s.files) for s in m] == [1, 1] and [s.weight for s in m] == [0.75, 0.25]
        assert [r['text'] for r in read_jsonl('hf://datasets/laion/OIG/sub/*')] == _docs(40)
        with pytest.raises(OCKError, match='no data files match hf://datasets/laion/OIG/nothing'): hub_files('hf://datasets/laion/OIG/nothing*')
        with pytest.raises(OCKError, match='cannot list hf://datasets/someone/missing'): hub_files('hf://datasets/someone/missing')
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize('name', ['chat.jsonl', 'chat.jsonl.gz'])
def test_stream_survives_a_dropped_connection(server, name):
    "A connection cut mid-file is reopened where the last full line ended (an HTTP Range for plain files)."
    root, url = server
    src = write_jsonl(root/name, _docs(3000))
    _Handler.cut[f'/{name}'] = src.stat().st_size // 2
    r = read_jsonl(f'{url}/{name}')
    assert [x['text'] for x in r] == _docs(3000) and r.report.n_bad == 0
    if name.endswith('.jsonl'):
        assert _Handler.seen[-1][1].startswith('bytes=') and int(_Handler.seen[-1][1][6:-1]) > 0
