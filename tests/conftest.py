"""Shared test setup: the console scripts of the interpreter running the tests are on PATH (CI calls .venv/bin/python
directly); the environment the console scripts run in; a tiny model; the one-line-error check; `ock-serve` launchers."""
import os, sys
from pathlib import Path

_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get('PATH', '').split(os.pathsep): os.environ['PATH'] = _bin + os.pathsep + os.environ.get('PATH', '')

import contextlib, signal, subprocess, time
import pytest
from openchatkit.core import free_port   # noqa: F401 (for the tests that import it from here)

BIN = Path(sys.executable).parent
# What a console script run by a test sees: no hub, no tokenizers threads, no API key from the caller's shell.
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
       'TOKENIZERS_PARALLELISM': 'false'}
ENV.pop('OCK_API_KEY', None)
CPU_ENV = {**ENV, 'DS_ACCELERATOR': 'cpu', 'CUDA_VISIBLE_DEVICES': ''}     # ... and on the CPU
SERVE_ENV = CPU_ENV

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny gpt_neox chat model saved in a folder of its own (a module's servers write their logs beside it)."
    from openchatkit.tiny import save_tiny_model
    return str(save_tiny_model(tmp_path_factory.mktemp('models')/'tiny', 'gpt_neox'))

def assert_one_line_error(r, *needles, returncode=2):
    "`r` (a finished subprocess) failed with `returncode` and one line `error: …` holding every needle, no traceback."
    assert r.returncode == returncode, r
    assert 'Traceback' not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith('[')]   # '[...] deepspeed' log noise
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    for n in needles: assert n in lines[0], lines[0]

def run_without_shipped_model(module, script, *args, timeout=300):
    "Run console script `openchatkit.MODULE.SCRIPT ARGS` as an install without the shipped model runs it (`default_model()` is None)."
    code = ("import sys; import openchatkit.inference as i; i.default_model = lambda: None\n"
            f"from openchatkit.{module} import {script}; sys.argv = [{script!r}, *sys.argv[1:]]; sys.exit({script}())")
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], input='', capture_output=True, text=True, env=CPU_ENV,
                          timeout=timeout)

def start_serve(*args, log_dir, env=None, ready_timeout=600):
    "Start `ock-serve ARGS` on a free loopback port; once /health answers, return (process, base URL, log path)."
    import httpx
    port = free_port()
    logp = Path(log_dir)/f'serve-{port}.log'
    with open(logp, 'w') as log:
        p = subprocess.Popen([str(BIN/'ock-serve'), '--port', str(port), '--log-level', 'warning', *map(str, args)],
                             stdout=log, stderr=subprocess.STDOUT, env={**SERVE_ENV, **(env or {})})
    url, t0 = f'http://127.0.0.1:{port}', time.monotonic()
    while True:
        if p.poll() is not None: raise RuntimeError(f"ock-serve exited {p.returncode}:\n{logp.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + '/health', timeout=2).status_code == 200: return p, url, logp
        if time.monotonic() - t0 > ready_timeout:
            stop_serve(p)
            raise TimeoutError(f'ock-serve did not answer within {ready_timeout}s')
        time.sleep(0.3)

def stop_serve(p, timeout=20):
    "Stop a server `start_serve` started: SIGINT, then kill."
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try: p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

@contextlib.contextmanager
def serving(*args, log_dir, env=None, ready_timeout=600):
    "Run `ock-serve ARGS` on a free loopback port until /health answers (log in `log_dir`); yield its base URL; stop it."
    p, url, _ = start_serve(*args, log_dir=log_dir, env=env, ready_timeout=ready_timeout)
    try: yield url
    finally: stop_serve(p)
