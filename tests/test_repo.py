"Repository invariants: notebooks are the source, clean, and the README is generated from nbs/index.ipynb."
import shutil, subprocess, sys, filecmp
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def _copy_project(tmp):
    for name in ('nbs', 'openchatkit', 'settings.ini', 'setup.py', 'README.md'):
        src = ROOT/name
        if src.is_dir(): shutil.copytree(src, tmp/name, ignore=shutil.ignore_patterns('__pycache__', 'assets'))
        else: shutil.copy(src, tmp/name)
    return tmp

def _diff(a: Path, b: Path, pattern):
    "Files under `a` and `b` matching `pattern` that differ or exist on one side only."
    fa = {p.relative_to(a) for p in a.rglob(pattern) if '__pycache__' not in p.parts}
    fb = {p.relative_to(b) for p in b.rglob(pattern) if '__pycache__' not in p.parts}
    return sorted(str(p) for p in fa ^ fb) + sorted(str(p) for p in fa & fb if not filecmp.cmp(a/p, b/p, shallow=False))

def test_library_matches_notebooks(tmp_path):
    "nbdev_export of nbs/ reproduces openchatkit/ exactly: nobody edited the library by hand."
    t = _copy_project(tmp_path)
    subprocess.run([BIN/'nbdev_export'], cwd=t, check=True, capture_output=True)
    bad = _diff(ROOT/'openchatkit', t/'openchatkit', '*.py')
    assert not bad, f"openchatkit/ is out of sync with nbs/ (run nbdev_export): {bad}"

def test_notebooks_are_clean(tmp_path):
    "nbdev_clean changes nothing: no outputs' metadata, execution counts or ids leak into git."
    t = _copy_project(tmp_path)
    subprocess.run([BIN/'nbdev_clean'], cwd=t, check=True, capture_output=True)
    bad = _diff(ROOT/'nbs', t/'nbs', '*.ipynb')
    assert not bad, f"notebooks are not clean (run nbdev_clean): {bad}"

def test_readme_matches_index():
    r = subprocess.run([sys.executable, ROOT/'tools'/'readme.py', '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_layout():
    for name in ('nbs', 'openchatkit', 'settings.ini', 'setup.py', 'README.md', 'LICENSE'): assert (ROOT/name).exists(), name
    assert 'Apache License' in (ROOT/'LICENSE').read_text() and 'Version 2.0' in (ROOT/'LICENSE').read_text()
    assert 'import pkg_resources' not in (ROOT/'setup.py').read_text() and 'from pkg_resources' not in (ROOT/'setup.py').read_text()

def test_import_is_fast():
    "`import openchatkit` must not drag in torch or transformers."
    code = "import sys, openchatkit; print(sorted(m for m in ('torch','transformers','deepspeed','faiss') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == '[]', r.stdout
