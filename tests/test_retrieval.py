"ock-index as a user runs it: build, search, add, info, and one-line errors for bad input (console-script subprocesses)."
import sys, json, shutil, subprocess
from pathlib import Path
import pytest
from conftest import ENV

EXE = shutil.which('ock-index') or str(Path(sys.executable).parent/'ock-index')

def ock_index(*args, cwd, timeout=240):
    p = subprocess.run([EXE, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr

def error_lines(err):
    "The stderr lines that are not progress bars or library warnings."
    return [l for l in err.splitlines() if l.strip() and not l.startswith(('warning:', 'Batches', 'Loading'))]

@pytest.fixture(scope='module')
def docs(tmp_path_factory):
    d = tmp_path_factory.mktemp('ui')
    (d/'docs'/'deep').mkdir(parents=True)
    (d/'docs'/'rivers.txt').write_text("The Zorblax river flows through Quenmark. It is purple.\nFishermen catch silver eels in it.\n\n"
                                       "The stock market fell on Tuesday. Banks lost the most.\n")
    (d/'docs'/'cities.md').write_text("# Cities\n\nKelvaro is the capital of [Drenthia](http://x.invalid).\n")
    (d/'docs'/'page.html').write_text("<html><body><h1>Bread</h1><p>Sourdough bread uses a fermented starter.</p>"
                                      "<script>var x = 1;</script></body></html>")
    (d/'docs'/'notes.jsonl').write_text('{"id": "n1", "text": "The moon Tiberon orbits the planet Vask."}\n{broken\n')
    (d/'docs'/'photo.txt').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR')
    (d/'docs'/'deep'/'hidden.txt').write_text("Only a recursive build finds the Gralmore glacier.")
    (d/'empty').mkdir()
    return d

@pytest.mark.timeout(900)
def test_build_search_add_info(docs):
    code, out, err = ock_index('build', 'docs', '--out', 'idx', cwd=docs)
    assert code == 0, err
    assert out.startswith('indexed ') and 'from 5 files' in out and 'all-MiniLM-L6-v2' in out, out
    assert 'warning: skipped docs/photo.txt: binary file' in err, err            # reported, skipped, build goes on
    assert 'notes.jsonl: skipped 1 line(s)' in err, err
    assert 'Traceback' not in err
    code, out, err = ock_index('search', 'idx', 'Which river flows through Quenmark?', '-k', '2', cwd=docs)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith('1. [') and lines[0].endswith('docs/rivers.txt:1'), out
    assert 'Zorblax' in lines[1] and '2. [' in out and '3. [' not in out, out
    code, out, err = ock_index('search', 'idx', 'capital of Drenthia', '-k', '1', '--json', cwd=docs)
    hit = json.loads(out.splitlines()[0])
    assert hit['source'] == 'docs/cities.md:1' and 'Kelvaro' in hit['text'] and 0 < hit['score'] <= 1, hit
    # add: only the sub-folder's new file is encoded; unchanged files are skipped
    code, out, err = ock_index('add', 'docs', '--out', 'idx', '--recursive', cwd=docs)
    assert code == 0, err
    assert '1 new, 0 changed, 5 unchanged' in out and '1 chunks encoded' in out, out
    code, out, err = ock_index('search', 'idx', 'Gralmore glacier', '-k', '1', '--json', cwd=docs)
    assert json.loads(out)['source'] == 'docs/deep/hidden.txt:1', out
    code, out, err = ock_index('info', 'idx', cwd=docs)
    assert code == 0 and 'sentence-transformers/all-MiniLM-L6-v2' in out and '6 files' in out, out

@pytest.mark.timeout(600)
def test_one_line_errors(docs):
    cases = [
        (('search', 'nowhere', 'query'), 'error: no index at nowhere'),
        (('build', 'empty', '--out', 'x'), 'error: no txt/md/markdown/rst/html/htm/jsonl files in empty'),
        (('build', 'missing-folder', '--out', 'x'), 'error: source not found: missing-folder'),
        (('build', 'docs'), 'error: build needs --out DIR'),
        (('search', 'docs', 'query'), 'error: docs is not an index'),
        (('frobnicate',), "error: unknown command 'frobnicate'"),
    ]
    for args, want in cases:
        code, out, err = ock_index(*args, cwd=docs, timeout=120)
        assert code == 2, (args, code, out, err)
        assert error_lines(err) == [error_lines(err)[0]] and error_lines(err)[0].startswith(want), (args, err)
        assert 'Traceback' not in err
    assert not (docs/'x').exists()                                   # nothing half-written

@pytest.mark.timeout(600)
def test_other_embedder_is_refused(docs, tmp_path):
    from openchatkit.retrieval import tiny_bert
    if not (docs/'idx').exists(): ock_index('build', 'docs', '--out', 'idx', cwd=docs)
    bert = tiny_bert(tmp_path/'bert')
    code, out, err = ock_index('search', 'idx', 'query', '--embedder', bert, cwd=docs)
    assert code == 2 and error_lines(err)[0].startswith("error: index idx was built with embedder "
                                                        "'sentence-transformers/all-MiniLM-L6-v2'"), err

def test_help():
    p = subprocess.run([EXE, '--help'], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and 'build | add | search | info' in p.stdout and '--recursive' in p.stdout
