"Repository invariants: notebooks are the source, clean, and the README is generated from nbs/index.ipynb."
import shutil, subprocess, sys, filecmp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def _copy_project(tmp):
    for name in ('nbs', 'openchatkit', 'recipes', 'tools', 'settings.ini', 'setup.py', 'README.md'):
        src = ROOT/name
        if src.is_dir(): shutil.copytree(src, tmp/name, ignore=shutil.ignore_patterns('__pycache__', 'assets'))
        else: shutil.copy(src, tmp/name)
    return tmp

def _diff(a: Path, b: Path, pattern):
    "Files under `a` and `b` matching `pattern` that differ or exist on one side only."
    fa = {p.relative_to(a) for p in a.rglob(pattern) if '__pycache__' not in p.parts}
    fb = {p.relative_to(b) for p in b.rglob(pattern) if '__pycache__' not in p.parts}
    return sorted(str(p) for p in fa ^ fb) + sorted(str(p) for p in fa & fb if not filecmp.cmp(a/p, b/p, shallow=False))

def _changed_by(tool, sub, pattern, tmp) -> list[str]:
    "The files under `sub` matching `pattern` that `tool` (an nbdev command), run on a copy of the project, changes."
    t = _copy_project(tmp)
    subprocess.run([BIN/tool], cwd=t, check=True, capture_output=True)
    return _diff(ROOT/sub, t/sub, pattern)

def test_library_matches_notebooks(tmp_path):
    "nbdev_export of nbs/ reproduces openchatkit/ exactly: nobody edited the library by hand."
    bad = _changed_by('nbdev_export', 'openchatkit', '*.py', tmp_path)
    assert not bad, f"openchatkit/ is out of sync with nbs/ (run nbdev_export): {bad}"

def test_notebooks_are_clean(tmp_path):
    "tools/nbclean.py (nbdev_clean, then the kernel metadata) changes nothing: no outputs' metadata, execution counts or ids leak into git."
    t = _copy_project(tmp_path)
    subprocess.run([sys.executable, t/'tools'/'nbclean.py'], cwd=t, check=True, capture_output=True)
    bad = _diff(ROOT/'nbs', t/'nbs', '*.ipynb') + _diff(ROOT/'recipes', t/'recipes', '*.ipynb')
    assert not bad, f"notebooks are not clean (run python tools/nbclean.py): {bad}"

def test_notebooks_open_unmodified():
    "Every notebook stores the kernelspec and language_info JupyterLab writes on open (else it is marked modified at once)."
    r = subprocess.run([sys.executable, ROOT/'tools'/'nbclean.py', '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_readme_matches_index():
    r = subprocess.run([sys.executable, ROOT/'tools'/'readme.py', '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_layout():
    for name in ('nbs', 'openchatkit', 'settings.ini', 'setup.py', 'README.md', 'LICENSE'): assert (ROOT/name).exists(), name
    assert 'Apache License' in (ROOT/'LICENSE').read_text() and 'Version 2.0' in (ROOT/'LICENSE').read_text()
    assert 'import pkg_resources' not in (ROOT/'setup.py').read_text() and 'from pkg_resources' not in (ROOT/'setup.py').read_text()

def test_import_pulls_in_no_heavy_library():
    "`import openchatkit` must not drag in torch or transformers."
    code = "import sys, openchatkit; print(sorted(m for m in ('torch','transformers','deepspeed','faiss') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == '[]', r.stdout

# -- layers: a module imports only modules of lower-numbered notebooks, and no other module's _private names
import ast, json, re

def module_numbers() -> dict:
    "openchatkit module name -> number of the notebook that exports it (from each notebook's `#| default_exp`)."
    out = {}
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
            if m:
                out[m.group(1)] = int(nb.name.split('_')[0])
                break
    return out

def package_imports(path: Path):
    "(line, imported module, names) for every import of an openchatkit module in `path`, at any depth (in functions too)."
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level: mod = 'openchatkit' + ('.' + mod if mod else '')
            if mod == 'openchatkit':                      # `from . import x` / `from openchatkit import x`
                for a in node.names: yield node.lineno, a.name, []
            elif mod.startswith('openchatkit.'): yield node.lineno, mod.split('.')[1], [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('openchatkit.'): yield node.lineno, a.name.split('.')[1], []

def layer_violations(lib: Path, numbers: dict) -> list[str]:
    bad = []
    for py in sorted(lib.glob('*.py')):
        me = py.stem
        if me not in numbers: continue                    # __init__, _modidx
        for line, mod, names in package_imports(py):
            if mod == me or mod in ('__version__',): continue
            if mod not in numbers:
                bad.append(f"{py.name}:{line}: imports unknown module {mod!r}")
                continue
            if numbers[mod] >= numbers[me]:
                bad.append(f"{py.name}:{line}: {me} (notebook {numbers[me]:02d}) imports {mod} (notebook {numbers[mod]:02d}): upward")
            for n in names:
                if n.startswith('_'): bad.append(f"{py.name}:{line}: imports the private name {mod}.{n}")
    return bad

def test_layers():
    "Imports go one way, down the notebook numbers, at module level and inside functions; no private names cross modules."
    numbers = module_numbers()
    assert len(numbers) >= 15, numbers
    bad = layer_violations(ROOT/'openchatkit', numbers)
    assert not bad, 'layer violations:\n' + '\n'.join(bad)

def test_layer_check_catches_violations(tmp_path):
    "The layer check itself: an upward import inside a function and a private import are both caught."
    (tmp_path/'low.py').write_text("def f():\n    from openchatkit.high import g\n")
    (tmp_path/'high.py').write_text("from .low import _secret\n")
    bad = layer_violations(tmp_path, {'low': 10, 'high': 20})
    assert any('low.py:2' in b and 'upward' in b for b in bad) and any('private name low._secret' in b for b in bad), bad

def test_ruff():
    ("The linter (pyproject's [tool.ruff]: unused imports and names, undefined names, no bare except, "
     "no `;`-joined statements) finds nothing.")
    ruff = shutil.which('ruff', path=str(BIN)) or shutil.which('ruff')
    assert ruff, 'ruff (a dev requirement) is not installed: pip install -e ".[dev]"'
    r = subprocess.run([ruff, 'check', '--no-cache', 'openchatkit', 'tests', 'tools'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]

# -- the install lock: requirements.lock (tools/lock.py) is what .ci/install installs
def _lock():
    sys.path.insert(0, str(ROOT/'tools'))
    import lock
    return lock

def test_lock_satisfies_settings():
    "Every requirement in settings.ini (library and dev) is pinned in requirements.lock at a version its range allows."
    lock = _lock()
    reqs, pins = lock.requirements(), lock.locked()
    assert len(reqs) > 30 and len(pins) > 150, (len(reqs), len(pins))
    assert not lock.unsatisfied(reqs, pins), lock.unsatisfied(reqs, pins)
    assert pins['torch'].endswith('+cpu'), pins['torch']        # the CPU build, as the README's install line asks for

def test_lock_check_catches_a_range_the_lock_misses(tmp_path):
    "The check itself: a range the pinned version falls outside, and a package the lock lacks, are both named."
    lock = _lock()
    pins = lock.locked()
    bad = lock.unsatisfied([f"transformers<{pins['transformers']}", 'no-such-package>=1'], pins)
    assert len(bad) == 2 and 'the lock has' in bad[0] and 'not in the lock' in bad[1], bad

def test_environment_is_the_lock():
    "The environment the suite runs in holds exactly the lock's versions (it was installed from it), and nothing beside them."
    from importlib.metadata import distributions
    lock, norm = _lock(), lambda n: re.sub(r'[-_.]+', '-', n).lower()
    pins = lock.locked()
    have = {norm(d.metadata['Name']): d.version for d in distributions()}
    have.pop('openchatkit', None)
    differ = sorted(f"{n}: installed {have.get(n)}, lock {pins.get(n)}" for n in set(have) | set(pins) if have.get(n) != pins.get(n))
    assert not differ, differ
