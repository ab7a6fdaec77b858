#!/usr/bin/env python
"""Run a notebook as `nbdev_test` does, and keep the outputs stored in it current.

    python tools/nbouts.py check nbs/01_conversation.ipynb ...   # run; fail on an error or on a stored output that changed
    python tools/nbouts.py store nbs/01_conversation.ipynb ...   # run twice; store the outputs that are the same both times

A reader on GitHub (or in a fresh JupyterLab) sees the stored outputs without running anything, so they must be what
the code prints today. `check` runs every code cell that `nbdev_test` runs (cells flagged with settings.ini's
`tst_flags` are skipped, as are `#| eval: false` cells and `nbdev_export()` calls) and compares each cell that has a
stored output with what it printed now: text as text (stream, `text/plain`, `text/markdown`; object ids and the
line numbers of `show_doc`'s source links masked);
an image must still be drawn, its pixels are not compared.

`store` keeps only outputs a reader can trust and CI can check on another machine: it runs the notebook twice, the
second time with torch, oneDNN and MKL held to AVX2 kernels (as on a CPU without AVX-512), and stores a
cell's output only if its text is the same in both runs, names no machine path, duration or today's date, and holds no widget
(a widget's state is not saved). Everything else is cleared. Then run `python tools/nbclean.py`."""
import json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_OTHER_CPU = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2'}
TEXT_KEYS = ('text/plain', 'text/markdown')
MACHINE_PATH = re.compile(r'/tmp/|/var/folders/|' + re.escape(str(Path.home())) + '|' + re.escape(str(ROOT)))
DURATION = re.compile(r'\b\d+(\.\d+)?\s*(s|ms|sec|seconds|min|minutes)\b|tok(ens)?/s|it/s')

def _join(x): return ''.join(x) if isinstance(x, list) else str(x or '')

def out_text(outputs) -> str:
    "The text of a cell's outputs, as compared: streams and text data, object ids masked, images as a mark."
    parts = []
    for o in outputs or []:
        if o.get('output_type') == 'stream': parts.append(_join(o.get('text')))
        elif o.get('output_type') == 'error': parts.append(f"error: {o.get('ename')}: {o.get('evalue')}")
        else:
            data = o.get('data', {})
            for k in TEXT_KEYS:
                if k in data:
                    parts.append(_join(data[k]))
                    break
            parts += [f'[{k}]' for k in data if k.startswith('image/')]
    text = re.sub(r' at 0x[0-9a-fA-F]+', ' at 0x…', ''.join(parts))
    return re.sub(r'(\.py)#L\d+', r'\1#L…', text).strip()          # show_doc's source link: the line moves with every edit above

def storable(outputs) -> bool:
    "Outputs a reader can trust on another machine: no widget, no error, no machine path or duration."
    if any(o.get('output_type') == 'error' or 'application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outputs or []):
        return False
    text, now = out_text(outputs), time.localtime()
    clock = [time.strftime(f, now) for f in ('%Y-%m-%d', '%H:%M', '%d %b %Y')]    # today's date: wrong tomorrow
    return not (MACHINE_PATH.search(text) or DURATION.search(text) or any(c in text for c in clock))

def run(fn: Path) -> dict:
    "Execute `fn` as nbdev_test does (in this process); `{cell id: (code ran, outputs)}`. Exits 1 on an error."
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    os.environ['IN_TEST'] = '1'
    flags = set(str(get_config().get('tst_flags', '')).split())
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    def skip(cell):
        if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return bool(flags & direc.keys())
    ran = {c.get('id'): not skip(c) for c in nb.cells}
    for c in nb.cells:
        if ran[c.get('id')]: c.outputs = []          # a cell that prints nothing now must not keep its stored output
    k = CaptureShell(fn)
    try:
        with working_directory(fn.parent): k.run_all(nb, exc_stop=True, preproc=skip)
    except Exception:
        sys.stderr.write(k.prettytb(fname=fn) + '\n')
        sys.exit(1)
    return {c.get('id'): (ran[c.get('id')], json.loads(json.dumps(c.get('outputs', []), default=dict))) for c in nb.cells}

def check(fn: Path) -> list[str]:
    "Run `fn`; the stored outputs that differ from what their cells print now."
    stored = {c.get('id'): c.get('outputs', []) for c in json.loads(fn.read_text())['cells']}
    bad = []
    for i, (cid, (ran, outs)) in enumerate(run(fn).items()):
        if not ran or not stored.get(cid): continue
        old, new = out_text(stored[cid]), out_text(outs)
        if old != new: bad.append(f"{fn.name}: cell {i} (id {cid}): its stored output is not what it prints now\n"
                                  f"--- stored\n{old[:1500]}\n--- now\n{new[:1500]}")
    return bad

def _run_elsewhere(fn: Path, env: dict) -> dict:
    "`run(fn)` in a fresh Python with `env` added; outputs by cell id."
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)/'outs.json'
        code = f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import nbouts; from pathlib import Path; " \
               f"Path({str(out)!r}).write_text(json.dumps(nbouts.run(Path({str(fn)!r}))))"
        r = subprocess.run([sys.executable, '-c', code], env={**os.environ, **env}, cwd=ROOT)
        if r.returncode: sys.exit(r.returncode)
        return {k: tuple(v) for k, v in json.loads(out.read_text()).items()}

def store(fn: Path) -> tuple[int, int]:
    "Run `fn` twice (here, and as on another CPU); store the outputs that agree and are `storable`; (stored, cleared)."
    a, b = _run_elsewhere(fn, {}), _run_elsewhere(fn, ENV_OTHER_CPU)
    nb = json.loads(fn.read_text())
    kept = cleared = 0
    for c in nb['cells']:
        if c['cell_type'] != 'code' or not a.get(c.get('id'), (False,))[0]: continue
        outs = a[c['id']][1]
        if outs and storable(outs) and out_text(outs) == out_text(b[c['id']][1]):
            for o in outs:
                if 'execution_count' in o: o['execution_count'] = None
            c['outputs'] = outs
            kept += 1
        else:
            cleared += bool(c.get('outputs') or outs)
            c['outputs'] = []
    fn.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return kept, cleared

if __name__ == '__main__':
    cmd, paths = sys.argv[1], [Path(p).resolve() for p in sys.argv[2:]]
    if cmd == 'check':
        bad = [m for p in paths for m in check(p)]
        print('\n\n'.join(bad) if bad else f"{len(paths)} notebook(s) ran; stored outputs are current")
        sys.exit(1 if bad else 0)
    elif cmd == 'store':
        for p in paths: print(f"{p.name}: %d outputs stored, %d cleared" % store(p))
    else: sys.exit(__doc__)
