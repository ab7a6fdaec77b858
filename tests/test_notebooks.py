"""Run every notebook as nbdev_test does (cells flagged slow, gpu or download are skipped), one pytest case each, and
check that the outputs stored in it are what its cells print now (`tools/nbouts.py`)."""
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts and not p.name.startswith('_'))

@pytest.mark.parametrize('nb', NBS, ids=[str(p.relative_to(ROOT/'nbs')) for p in NBS])
def test_notebook(nb):
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'nbouts.py'), 'check', str(nb)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]

def test_stale_output_is_caught(tmp_path):
    "A stored output that its cell no longer prints fails the check; one it still prints passes."
    cell = lambda src, text: {'cell_type': 'code', 'execution_count': None, 'id': f'c{len(src)}', 'metadata': {},
                              'outputs': [{'name': 'stdout', 'output_type': 'stream', 'text': [text]}], 'source': [src]}
    nb = lambda cells: {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
                        'nbformat': 4, 'nbformat_minor': 5}
    f = tmp_path/'t.ipynb'
    f.write_text(json.dumps(nb([cell('print(1 + 1)', '2\n'), cell('print("a" * 3)', 'aaa\n')])))
    ok = subprocess.run([sys.executable, str(ROOT/'tools'/'nbouts.py'), 'check', str(f)], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    f.write_text(json.dumps(nb([cell('print(1 + 1)', '3\n'), cell('print("a" * 3)', 'aaa\n')])))
    bad = subprocess.run([sys.executable, str(ROOT/'tools'/'nbouts.py'), 'check', str(f)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and 'cell 0' in bad.stdout and '--- now\n2' in bad.stdout, bad.stdout + bad.stderr

def test_stored_outputs_name_no_machine_path():
    "No stored output shows a temporary folder, a home directory or this checkout's path (`tools/nbouts.py store` keeps none)."
    sys.path.insert(0, str(ROOT/'tools'))
    import nbouts
    bad = [f"{nb.name}: cell {i}: {nbouts.MACHINE_PATH.search(nbouts.out_text(c['outputs'])).group(0)}" for nb in NBS
           for i, c in enumerate(json.loads(nb.read_text())['cells'])
           if c.get('outputs') and nbouts.MACHINE_PATH.search(nbouts.out_text(c['outputs']))]
    assert not bad, bad
