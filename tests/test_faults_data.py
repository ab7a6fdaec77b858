"""Hostile data as users' commands meet it (issue 15): text the tokenizer cannot encode, BOMs, a huge line, a long
document to split, absurd mixture weights, non-UTF-8 arguments. Each is reported in one line and skipped, or refused."""
import sys, json, shutil, subprocess
from pathlib import Path
import pytest
import conftest

BIN = Path(sys.executable).parent
ENV = {**conftest.ENV, 'OMP_NUM_THREADS': '1'}
SURROGATE = '{"text": "x \\udc80"}'          # valid JSON; the string has no UTF-8 form


def run(exe, *args, cwd=None, stdin=None, timeout=240):
    "Run a console script; arguments may be bytes (not UTF-8), output comes back as text (bad bytes replaced)."
    p = shutil.which(exe) or str(BIN/exe)
    r = subprocess.run([p, *(a if isinstance(a, bytes) else str(a) for a in args)], cwd=cwd, env=ENV, capture_output=True,
                       input=stdin.encode() if isinstance(stdin, str) else stdin, timeout=timeout)
    r.stdout, r.stderr = r.stdout.decode('utf-8', 'replace'), r.stderr.decode('utf-8', 'replace')
    return r


def _surrogate_file(path, good=('Alpha is a river.', 'Beta is a mountain.')):
    path.write_text(json.dumps({'text': good[0]}) + '\n' + SURROGATE + '\n' + json.dumps({'text': good[1]}) + '\n')
    return path


def test_surrogate_stats(tmp_path):
    "`ock-prepare-data --stats` counts the record as bad (with file:line), not as good."
    f = _surrogate_file(tmp_path/'s.jsonl')
    r = run('ock-prepare-data', '--stats', f)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert '2 records, 1 bad records skipped' in r.stdout, r.stdout
    assert f"{f}:2: unencodable 'text' (lone surrogate U+DC80" in r.stdout, r.stdout


def test_surrogate_index_build(tmp_path):
    "`ock-index build` reports the record with file:line and indexes the rest."
    from openchatkit.retrieval import tiny_bert
    emb = tiny_bert(tmp_path/'bert')                                       # a tiny encoder: the test is about reading
    (tmp_path/'docs').mkdir()
    f = _surrogate_file(tmp_path/'docs'/'s.jsonl')
    r = run('ock-index', 'build', tmp_path/'docs', '--out', tmp_path/'idx', '--window', '1', '--embedder', f'mean:{emb}', cwd=tmp_path)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert f"{f}:2: skipped 1 record(s) whose text the tokenizer cannot encode" in r.stderr, r.stderr
    assert 'chunks of 2 documents' in r.stdout, r.stdout
    r = run('ock-index', 'search', tmp_path/'idx', b'river \xff', cwd=tmp_path)      # a query that is not UTF-8
    assert r.returncode == 2 and 'Traceback' not in r.stderr and r.stderr.strip().splitlines()[-1] == (
        "error: the query is not UTF-8 text (lone surrogate U+DCFF at character 6: no UTF-8 form, the tokenizer cannot take it)"), r.stderr


def test_surrogate_moderate(tmp_path):
    "`ock-moderate --file`: the line is reported and skipped; the others are moderated."
    f = tmp_path/'m.jsonl'
    f.write_text('{"text": "What is a good pasta recipe?"}\n' + SURROGATE + '\n{"text": "Where is Paris?"}\n')
    r = run('ock-moderate', '--file', f, '--json')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert [json.loads(l)['input'] for l in r.stdout.splitlines()] == ['What is a good pasta recipe?', 'Where is Paris?']
    assert f'warning: skipping {f}:2: lone surrogate U+DC80' in r.stderr, r.stderr


def test_bom_stats(tmp_path):
    "A .jsonl saved with a UTF-8 BOM (and the same compressed) loses no record."
    import gzip
    raw = b'\xef\xbb\xbf' + b''.join(json.dumps({'text': f'record {i}'}).encode() + b'\r\n' for i in range(3))
    (tmp_path/'a.jsonl').write_bytes(raw)
    (tmp_path/'b.jsonl.gz').write_bytes(gzip.compress(raw))
    r = run('ock-prepare-data', '--stats', tmp_path)
    assert r.returncode == 0 and '2 file(s), 6 records, 0 bad records skipped' in r.stdout, (r.stdout, r.stderr)


HUGE = r'''
import sys, json, time, threading, resource
from openchatkit.data import PackedStream
from openchatkit.tiny import train_tokenizer
def status_mb(key):
    for l in open('/proc/self/status'):
        if l.startswith(key + ':'): return int(l.split()[1]) / 1024
tok = train_tokenizer([f"small record {i} with some words" for i in range(50)], vocab_size=300)
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))     # a regression fails here, not the machine
out, peak, done = {}, [0.0], threading.Event()
def watch():                                                      # anonymous memory: page-cache churn does not move it
    while not done.is_set(): peak[0] = max(peak[0], status_mb('RssAnon')); time.sleep(0.001)
for path in sys.argv[1:]:
    anon = status_mb('RssAnon')
    peak[0], w = anon, threading.Thread(target=watch); done.clear(); w.start()
    s = PackedStream(path, tok, 16, shuffle=False, cycle=False, drop_last=False)
    n = sum(1 for _ in s)
    done.set(); w.join()
    rep = s.report[path]
    out[path] = dict(anon=peak[0] - anon, blocks=n,
                     records=rep.records, bad=dict(rep.bad), examples=rep.examples)
print(json.dumps(out))
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_huge_line_bounded_memory(tmp_path):
    "An 80 MB line between small ones: reported (file:line, size) and skipped; the stream's memory grows < 48 MB."
    import gzip, zstandard
    small = [json.dumps({'text': f'small record {i}'}).encode() + b'\n' for i in range(20)]
    word = b'lorem ipsum dolor sit amet '
    n_words = (80 << 20) // len(word)
    def write(f):
        for s in small[:10]: f.write(s)
        f.write(b'{"text": "')
        for _ in range(n_words // 4096): f.write(word * 4096)
        f.write(b'"}\n')
        for s in small[10:]: f.write(s)
    paths = [tmp_path/'huge.jsonl', tmp_path/'huge.jsonl.gz', tmp_path/'huge.jsonl.zst']
    with open(paths[0], 'wb') as f: write(f)
    with gzip.open(paths[1], 'wb', compresslevel=1) as f: write(f)
    with zstandard.ZstdCompressor(level=1).stream_writer(open(paths[2], 'wb')) as f: write(f)
    size = paths[0].stat().st_size - sum(map(len, small))
    r = subprocess.run([sys.executable, '-c', HUGE, *map(str, paths)], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.splitlines()[-1])
    for p in paths:
        g = got[str(p)]
        assert g['records'] == 20 and g['bad'] == {'record too large': 1} and g['blocks'] > 0, (p, g)
        assert g['examples'][0].startswith(f'{p}:11: record too large ({size:,} bytes'), g['examples']
        # anonymous memory, sampled each millisecond: an 80 MB line held, decoded or tokenized shows there. (Not peak
        # RSS: library pages mapped in as the stream first runs, fewer when other tests warmed the page cache, moved it.)
        assert g['anon'] < 48, (p, g['anon'])


SHAPES = {   # (suffix, text of about n characters): what sentence splitting and the .md/.html readers meet
    'prose': ('txt', lambda n: "The river flows north. It is long! Does it end? Yes, near Mr. Smith's farm.\n" * (n // 76)),
    'no-ends': ('txt', lambda n: 'word. ' * (n // 6)),                  # a stop before lowercase never ends a sentence
    'abbrevs': ('txt', lambda n: 'Dr. ' * (n // 4)),
    'stops': ('txt', lambda n: '!' * n),
    'lines': ('txt', lambda n: 'Line one.\n' * (n // 10)),
    'brackets': ('md', lambda n: '[' * n),
    'links': ('md', lambda n: '[a](' * (n // 4)),
    'comments': ('html', lambda n: '<!--' * (n // 4)),
    'tags': ('html', lambda n: '<a' * (n // 2)),
    'end-tags': ('html', lambda n: '</' * (n // 2)),
    'quotes': ('html', lambda n: "<a '>" + '<b>x' * (n // 4)),        # an unclosed quote, then many tags
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('shape', SHAPES)
def test_index_reading_and_splitting_linear(tmp_path, shape):
    "Reading and chunking a 2 MB document costs about 10x a 200 kB one (it was quadratic: 2 MB did not finish in 300 s)."
    import time
    from openchatkit.retrieval import read_documents, chunk_document
    suffix, make = SHAPES[shape]
    def cost(n):
        "Seconds per read-and-chunk of an n-character document, over enough runs to take 0.1 s (a cheap shape is timed many times)."
        p = tmp_path/f'doc{n}.{suffix}'
        p.write_text(make(n))
        runs, t = 0, time.perf_counter()
        while runs == 0 or time.perf_counter() - t < 0.1:
            for d in read_documents(p, report=lambda m: None): chunk_document(d)
            runs += 1
        return (time.perf_counter() - t) / runs
    small, big = min(cost(200_000) for _ in range(2)), cost(2_000_000)
    # (+20 ms: a 2 MB pass that cheap is no hazard, and there caches, not the algorithm, set the ratio)
    assert big < 30 * small + 0.02, f"{shape}: 200 kB {small:.3f}s, 2 MB {big:.3f}s (x{big / small:.0f} for 10x the size)"


def test_absurd_weight_and_non_utf8_argument(tmp_path):
    "A mixture weight of 1e308 and a non-UTF-8 `ock-moderate` argument: one clear line each, exit status 2."
    f = tmp_path/'a.jsonl'
    f.write_text('{"text": "hello"}\n')
    r = run('ock-prepare-data', '--stats', f'{f}:1e308')
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: mixture item '{f}:1e308': weight must be a number > 0 and at most 1e12 "
        f"(weights are relative, e.g. 0.2 or 3), got '1e308'"], r.stderr
    r = run('ock-moderate', 'fine', b'caf\xe9 au lait')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith('error: argument 2: not UTF-8 text (lone surrogate U+DCE9 at character 3'), r.stderr
