"""Faults in multi-process training (tiny models, CPU, gloo): a worker that raises, or is killed, ends the whole run with
its error on the launcher's stderr instead of hanging it; a SIGKILL of `ock-train` (or of its process group) leaves no
worker behind; a second run refuses an output folder a live run holds.

Faults are injected into the workers through a `sitecustomize` module on their PYTHONPATH (test-only: the package has
no fault hooks). Every wait polls for an event under a generous guard: the guards catch hangs, they do not time speed."""
import os, sys, json, time, signal, socket, subprocess
from pathlib import Path
import pytest, yaml

os.environ['HF_HUB_OFFLINE'] = '1'
from openchatkit.tiny import save_tiny_model
from openchatkit.data import write_jsonl
from openchatkit.checkpoint import read_metrics

BIN = Path(sys.executable).parent
# seconds: a run that should end but has not by then is hung (it used to hang forever)
GUARD = float(os.environ.get('OCK_TEST_GUARD', 300))
pytestmark = pytest.mark.timeout(900)

HOOK = '''
import os
_f = os.environ.get('OCK_TEST_FAULT')            # "RANK:N:KIND": on that rank, the N-th optimizer step raises (step)
if _f and os.environ.get('RANK') == _f.split(':')[0]:    # or the N-th metrics line hits a full disk (disk)
    _n, _kind = int(_f.split(':')[1]), _f.split(':')[2]
    import openchatkit.trainer as _t, openchatkit.lora as _l
    if _kind == 'step':
        for _cls in (_t.Trainer, _l.LoraTrainer):
            def _wrap(orig):
                calls = [0]
                def train_step(self, *a, **k):
                    calls[0] += 1
                    if calls[0] == _n: raise RuntimeError(f"injected fault at step {_n}")
                    return orig(self, *a, **k)
                return train_step
            _cls.train_step = _wrap(_cls.train_step)
    else:
        class _Full:
            def __init__(self, f): self.f, self.n, self.name = f, 0, f.name
            def write(self, s):
                self.n += 1
                if self.n == _n: raise OSError(28, 'No space left on device')
                return self.f.write(s)
            def __getattr__(self, k): return getattr(self.f, k)
        import openchatkit.checkpoint as _c                  # both trainers record steps through checkpoint.StepLog
        _open = _c.open_metrics
        _c.open_metrics = lambda out: _Full(_open(out))
'''

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp('faults')
    texts = [f"<human>: What is {a} plus {b}?\n<bot>: {a} plus {b} is {a+b}." for a in range(10, 70) for b in (3, 17, 28)]
    write_jsonl(d/'train.jsonl', [{'text': x} for x in texts])
    (d/'empty.jsonl').write_text('')
    model = save_tiny_model(d/'neox', 'gpt_neox', texts=texts, layers=2, hidden=32)
    (d/'hook').mkdir()
    (d/'hook'/'sitecustomize.py').write_text(HOOK)
    base = dict(model=str(model), data=str(d/'train.jsonl'), seq_length=32, micro_batch_size=2, gradient_accumulation_steps=1,
                total_steps=6, lr=2e-3, warmup_steps=1, checkpoint_every=0, progress=False, log_backend='none', seed=7,
                pipeline_parallel=2)
    return d, base

def _config(d, name, cfg):
    p = d/f'{name}.yaml'
    p.write_text(yaml.safe_dump({**cfg, 'output_dir': str(d/name)}))
    return p

def _env(d, fault=None):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(d/'hook'), os.environ.get('PYTHONPATH', '')])}
    if fault: e['OCK_TEST_FAULT'] = fault
    return e

# ---- processes: the tree under a pid, read from /proc (pid and start time, so a reused pid is not mistaken for ours)
def _stat(pid):
    try: s = Path(f'/proc/{pid}/stat').read_text()
    except OSError: return None
    f = s.rsplit(')', 1)[1].split()
    return f[0], int(f[1]), f[19]                     # state, ppid, start time

def _tree(root) -> set:
    "(pid, start time) of every live descendant of `root`."
    kids = {}
    for p in os.listdir('/proc'):
        if p.isdigit() and (st := _stat(int(p))) and st[0] != 'Z': kids.setdefault(st[1], []).append((int(p), st[2]))
    out, todo = set(), [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c[0])
    return out

def _alive(procs) -> set:
    return {(p, t) for p, t in procs if (st := _stat(p)) and st[0] != 'Z' and st[2] == t}

def _kill_all(procs):
    for p, _ in _alive(procs):
        try: os.kill(p, signal.SIGKILL)
        except ProcessLookupError: pass

def _wait_gone(procs, what):
    t0 = time.time()
    while (left := _alive(procs)) and time.time() - t0 < GUARD: time.sleep(0.2)
    _kill_all(left)
    assert not left, f"{what}: processes still running: {sorted(left)}"

def _start(args, env, log):
    return subprocess.Popen([str(BIN/'ock-train'), *map(str, args)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)

def _finish(p, log_path):
    "Wait for the run to end on its own (killing its whole tree if it hangs); returns (exit code, output)."
    procs, t0 = _tree(p.pid), time.time()
    while p.poll() is None and time.time() - t0 < GUARD:
        procs |= _tree(p.pid)
        time.sleep(0.5)
    hung = p.poll() is None
    if hung:
        _kill_all(procs | {(p.pid, _stat(p.pid)[2])})
        p.wait()
    out = Path(log_path).read_text()
    assert not hung, f"the run hung ({GUARD} s without exiting):\n{out[-3000:]}"
    _wait_gone(procs, 'after the run ended')
    return p.returncode, out

def _run(d, name, cfg, *ov, fault=None, nproc=2):
    log = d/f'{name}.log'
    with open(log, 'w') as f: p = _start([_config(d, name, cfg), *ov, '--nproc', nproc], _env(d, fault), f)
    return _finish(p, log)

def _errors(out): return [l for l in out.splitlines() if l.startswith('error: ')]

# ---- item 2: a raising worker ends the run, with its error, whatever the pipeline size
def test_empty_source_in_mixture_ends_pp2_run(env):
    d, base = env
    rc, out = _run(d, 'empty', base, f"data={d/'train.jsonl'}:0.2,{d/'empty.jsonl'}:0.8")
    first = _errors(out)[0]                                              # the rank that failed, before the others
    assert rc != 0 and first.startswith('error: [rank ') and 'has no usable records' in first, out[-3000:]

def test_rank1_raising_at_step_k_ends_pp2_run(env):
    d, base = env
    rc, out = _run(d, 'raise1', base, fault='1:3:step')
    assert rc != 0 and _errors(out)[0] == 'error: [rank 1] RuntimeError: injected fault at step 3', out[-3000:]
    assert [r['step'] for r in read_metrics(d/'raise1')] == [1, 2]       # rank 0 could not finish step 3 without rank 1

def test_lora_dp2_rank0_disk_full_while_logging_ends_run(env):
    d, base = env
    cfg = {**base, 'pipeline_parallel': 1, 'lora': True, 'lora_r': 4, 'lora_alpha': 8, 'lora_target': 'all-linear'}
    rc, out = _run(d, 'lora0', cfg, fault='0:2:disk')      # rank 1 waits in the next step's all-reduce
    first = _errors(out)[0]
    assert rc != 0 and first.startswith('error: [rank 0] ') and 'metrics.jsonl: cannot write: No space left on device' in first, out[-3000:]
    assert [r['step'] for r in read_metrics(d/'lora0')] == [1]

# ---- item 4: the workers die with their launcher; one live run per output folder
def _steps(out):
    f = Path(out)/'metrics.jsonl'
    return f.read_text().count('\n') if f.exists() else 0

def _wait_steps(p, out, n, log):
    "Poll until the run in `out` has logged `n` metrics lines."
    t0 = time.time()
    while _steps(out) < n:
        assert p.poll() is None and time.time() - t0 < GUARD, Path(log).read_text()[-3000:]
        time.sleep(0.2)

def _rank_of(pid):
    "The RANK in the environment of process `pid` (None: not a worker, or gone)."
    try: env = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
    except OSError: return None
    return next((int(v[5:]) for v in env if v.startswith(b'RANK=')), None)

def _workers(procs): return {(p, t) for p, t in procs if _rank_of(p) is not None}

@pytest.fixture(scope='module')
def live(env):
    "A long pp=2 run (checkpoints every 2 steps) in one folder, for the kills below in turn."
    d, base = env
    return d, _config(d, 'live', {**base, 'total_steps': 100000, 'checkpoint_every': 2}), d/'live'

def _start_live(live, name):
    d, cfgp, out = live
    log = d/f'{name}.log'
    with open(log, 'w') as f: p = _start([cfgp], _env(d), f)
    try:
        _wait_steps(p, out, _steps(out) + 1, log)        # training (not just starting): a new metrics line
        procs = _tree(p.pid)
        assert len(_workers(procs)) == 2, procs
    except BaseException:
        _kill_all(_tree(p.pid))
        p.kill()
        p.wait()
        raise
    return p, procs, log

def test_sigkill_of_launcher_leaves_no_worker_and_a_second_run_is_refused(live):
    d, cfgp, out = live
    p, procs, _ = _start_live(live, 'live1')
    try:                                                  # a second run on the folder: one line naming the holder
        log2 = d/'second.log'
        with open(log2, 'w') as f: rc, text = _finish(_start([cfgp], _env(d), f), log2)
        lines = [l for l in text.strip().splitlines() if 'real_accelerator' not in l]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith('error: '), text[-3000:]
        assert f'pid {p.pid} on host {socket.gethostname()}' in lines[0], lines
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        _wait_gone(procs, 'after SIGKILL of ock-train')

def test_sigkill_of_launcher_group_leaves_no_worker(live):
    d, cfgp, out = live
    lock = out/'train.lock'
    if not (lock.exists() and lock.read_text().strip()):  # run alone: the lock a killed run leaves (its pid is gone)
        out.mkdir(parents=True, exist_ok=True)
        lock.write_text(json.dumps(dict(pid=2**22 + 1, host=socket.gethostname())) + '\n')
    stale = json.loads(lock.read_text())
    p, procs, _ = _start_live(live, 'live2')              # the lock of the killed run (above, or just written) is taken over
    assert json.loads(lock.read_text())['pid'] == p.pid != stale['pid'], (stale, lock.read_text())
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    _wait_gone(procs, 'after SIGKILL of the process group of ock-train')

def test_sigkill_of_one_worker_ends_the_run(live):
    d, cfgp, out = live
    p, procs, log = _start_live(live, 'live3')
    victim = next(w for w in _workers(procs) if _rank_of(w[0]) == 1)
    os.kill(victim[0], signal.SIGKILL)
    rc, text = _finish(p, log)
    assert rc != 0 and 'error: training failed' in text, text[-3000:]
    _wait_gone(procs, "after SIGKILL of a worker")
