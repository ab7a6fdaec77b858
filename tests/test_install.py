"""`.ci/install` prints one line when it works and, when a step fails, that step and everything it printed. Run on a copy
of the script with a stand-in interpreter (no real install here): pip's and setuptools' chatter is what it hides."""
import os, shutil, subprocess, stat
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _setup(tmp_path, fail_on=None):
    (tmp_path/'.ci').mkdir()
    shutil.copy(ROOT/'.ci'/'install', tmp_path/'.ci'/'install')
    shutil.copy(ROOT/'requirements.lock', tmp_path/'requirements.lock')
    py = tmp_path/'fakepy'
    py.write_text("#!/bin/sh\n"
                  "case \"$*\" in *print\\(openchatkit.__version__\\)*) echo 9.9.9; exit 0;; esac\n"
                  "echo \"pip chatter: $*\"; echo 'SetuptoolsDeprecationWarning: License classifiers are deprecated.' >&2\n"
                  f"case \"$*\" in *{fail_on or 'NEVER'}*) "
                  "echo 'ERROR: No matching distribution found for torch==2.13.0' >&2; exit 1;; esac\n"
                  "case \"$*\" in *'-m venv'*) mkdir -p .venv/bin; cp \"$0\" .venv/bin/python;; esac\n")
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    return subprocess.run(['bash', str(tmp_path/'.ci'/'install')], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, 'PYTHON': str(py)}, timeout=60)

def test_quiet_on_success(tmp_path):
    "Failed before: pip's and setuptools' warnings (here the stand-in's 'License classifiers are deprecated') went through."
    r = _setup(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "installed openchatkit 9.9.9 in .venv\n" and r.stderr == '', (r.stdout, r.stderr)

def test_failing_step_shows_its_output(tmp_path):
    r = _setup(tmp_path, fail_on='-e')
    assert r.returncode == 1
    assert "install failed at step 'install openchatkit'" in r.stderr
    assert 'No matching distribution found for torch==2.13.0' in r.stderr and 'pip chatter' in r.stderr
    assert 'installed openchatkit' not in r.stdout

def test_wheel_builds_without_warnings(tmp_path):
    """Failed before: setuptools' 'License classifiers are deprecated' (the SPDX `license_expression` replaces them) and
    "Package 'openchatkit.assets' is absent from the `packages` configuration"; every shipped asset is in the wheel."""
    import sys, zipfile
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, text=True).stdout.split()
    src = tmp_path/'src'
    for f in files:
        if (ROOT/f).is_file():
            (src/f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT/f, src/f)
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '.', '--no-deps', '--no-build-isolation', '-w', str(tmp_path/'whl')],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert 'License classifiers are deprecated' not in out and 'is absent from the `packages`' not in out, out[-3000:]
    whl, = (tmp_path/'whl').glob('*.whl')
    names = zipfile.ZipFile(whl).namelist()
    assert {f for f in files if f.startswith('openchatkit/assets/')} <= set(names)
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith('METADATA'))).decode()
    assert 'License-Expression: Apache-2.0' in meta and 'Classifier: License' not in meta
