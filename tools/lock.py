#!/usr/bin/env python
"""The install lock: every package, at one exact version with its hashes, that `.ci/install` installs.

    python tools/lock.py              # re-resolve after settings.ini changed, keeping every pin the ranges still allow
    python tools/lock.py --upgrade    # re-resolve to the newest releases settings.ini allows (a deliberate commit)
    python tools/lock.py --check      # change nothing; exit 1 if the lock does not satisfy settings.ini
    python tools/lock.py --as-of 2026-11-30T03:00:00Z   # resolve with only the releases published before then

The library's own requirements stay ranges in settings.ini (people install it into their own environments). The lock is
what the suite was last green with, so a fresh machine installs exactly what was tested, and a new upstream release
changes nothing until someone runs `--upgrade` and commits the result: that commit's CI shows what broke.

`uv pip compile` resolves (a standard tool, on the registries; installed with the dev extras) for the CI platform:
CPython 3.11 on x86-64 Linux, with torch's CPU build (`torch==2.13.0`, as the README's install line asks for). It is
given the package sources pip is configured with (`pip config`: extra indexes, find-links) so that it sees the same
files pip will install, and it takes the best match over all of them, as pip does."""
import argparse, configparser, os, re, shlex, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT/'requirements.lock'
TORCH = 'torch==2.13.0'          # the CPU build (a bare torch resolves to a CUDA build of several GB)
TOOLS = ['pip']                  # the installer itself is pinned too
PYTHON, PLATFORM = '3.11', 'x86_64-manylinux_2_28'

def requirements(root: Path = ROOT) -> list[str]:
    "settings.ini's `requirements` and `dev_requirements`, as pip reads them (setup.py splits them the same way)."
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(root/'settings.ini', encoding='utf-8')
    return [r for k in ('requirements', 'dev_requirements') for r in shlex.split(cfg['DEFAULT'].get(k, '').replace('\n', ' '))]

def locked(path: Path = LOCK) -> dict[str, str]:
    "name -> version of every `name==version` line in the lock (names normalised as PEP 503 does)."
    out = {}
    for line in path.read_text().splitlines():
        if m := re.match(r'^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)', line):
            out[re.sub(r'[-_.]+', '-', m.group(1)).lower()] = m.group(3)
    return out

def unsatisfied(reqs: list[str], pins: dict[str, str]) -> list[str]:
    "The requirements that the pinned versions do not satisfy (or that the lock does not hold at all)."
    from packaging.requirements import Requirement
    bad = []
    for r in map(Requirement, reqs):
        if r.marker is not None and not r.marker.evaluate({'python_version': PYTHON}): continue
        v = pins.get(re.sub(r'[-_.]+', '-', r.name).lower())
        if v is None: bad.append(f"{r}: not in the lock")
        elif not r.specifier.contains(v, prereleases=True): bad.append(f"{r}: the lock has {v}")
    return bad

def pip_sources() -> list[str]:
    "uv's flags for the package sources pip is configured with here (extra indexes and find-links), if any."
    def get(key):
        r = subprocess.run([sys.executable, '-m', 'pip', 'config', 'get', key], capture_output=True, text=True)
        return r.stdout.split() if r.returncode == 0 else []
    links = get('global.find-links') + os.environ.get('PIP_FIND_LINKS', '').split()
    extra = get('global.extra-index-url') + os.environ.get('PIP_EXTRA_INDEX_URL', '').split()
    return ([a for u in dict.fromkeys(extra) for a in ('--extra-index-url', u)]
            + [a for u in dict.fromkeys(links) for a in ('--find-links', u)])

def compile_lock(upgrade: bool = False, as_of: str | None = None):
    uv = shutil.which('uv', path=str(Path(sys.executable).parent)) or shutil.which('uv')
    if uv is None: sys.exit('tools/lock.py needs uv (pip install -e ".[dev]")')
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)/'requirements.in'
        src.write_text('\n'.join([TORCH] + TOOLS + requirements()) + '\n')
        out = Path(tmp)/'requirements.lock'     # the current lock (uv keeps its pins), unless moving to the newest or to a date
        if LOCK.exists() and not (as_of or upgrade): shutil.copy(LOCK, out)
        cmd = [uv, 'pip', 'compile', str(src), '-o', str(out), '--generate-hashes', '--python-version', PYTHON,
               '--python-platform', PLATFORM, '--index-strategy', 'unsafe-best-match', '--no-header', '--no-annotate',
               '--emit-build-options', '--quiet', *pip_sources(), *(['--upgrade'] if upgrade else []),
               *(['--exclude-newer', as_of] if as_of else [])]
        r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, 'UV_NO_CONFIG': '1'})
        if r.returncode: sys.exit(r.returncode)
        text = out.read_text()     # sources are this machine's settings, not the project's: pip finds them from its own config
    text = '\n'.join(l for l in text.splitlines() if not l.startswith(('--find-links', '--extra-index-url', '--index-url')))
    LOCK.write_text(HEADER + text.lstrip('\n') + '\n')

HEADER = """# The install lock (python tools/lock.py writes it; --upgrade moves it to the newest releases settings.ini allows).
# .ci/install: pip install --require-hashes --no-deps -r requirements.lock, then the project itself without dependencies.
# CPython 3.11, x86-64 Linux, torch's CPU build.
"""

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--upgrade', action='store_true', help='re-resolve to the newest releases settings.ini allows')
    ap.add_argument('--check', action='store_true', help='only check that the lock satisfies settings.ini')
    ap.add_argument('--as-of', metavar='TIME', help='only releases published before TIME (e.g. 2026-11-30T03:00:00Z)')
    a = ap.parse_args()
    if not a.check: compile_lock(a.upgrade, a.as_of)
    bad = unsatisfied(requirements(), locked())
    for b in bad: print(f"requirements.lock does not satisfy settings.ini: {b}")
    if not a.check: print(f"requirements.lock: {len(locked())} packages")
    sys.exit(1 if bad else 0)

if __name__ == '__main__': main()
