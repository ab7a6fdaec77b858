"Shared test setup: the console scripts of the interpreter running the tests are on PATH (CI calls .venv/bin/python directly)."
import os, sys
from pathlib import Path

_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get('PATH', '').split(os.pathsep): os.environ['PATH'] = _bin + os.pathsep + os.environ.get('PATH', '')

import contextlib, signal, subprocess, time
from openchatkit.core import free_port   # noqa: F401 (for the tests that import it from here)

SERVE_ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
             'DS_ACCELERATOR': 'cpu', 'CUDA_VISIBLE_DEVICES': ''}
SERVE_ENV.pop('OCK_API_KEY', None)

@contextlib.contextmanager
def serving(*args, log_dir, env=None, ready_timeout=600):
    "Run `ock-serve ARGS` on a free loopback port until /health answers (log in `log_dir`); yield its base URL; stop it (SIGINT, then kill)."
    import httpx
    port = free_port()
    log = open(Path(log_dir)/f'serve-{port}.log', 'w+')
    p = subprocess.Popen([str(Path(sys.executable).parent/'ock-serve'), '--port', str(port), '--log-level', 'warning', *map(str, args)],
                         stdout=log, stderr=subprocess.STDOUT, env={**SERVE_ENV, **(env or {})})
    url, t0 = f'http://127.0.0.1:{port}', time.monotonic()
    try:
        while True:
            if p.poll() is not None: log.seek(0); raise RuntimeError(f"ock-serve exited {p.returncode}:\n{log.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + '/health', timeout=2).status_code == 200: break
            if time.monotonic() - t0 > ready_timeout: raise TimeoutError(f'ock-serve did not answer within {ready_timeout}s')
            time.sleep(0.3)
        yield url
    finally:
        p.send_signal(signal.SIGINT)
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill(); p.wait(10)
        log.close()
