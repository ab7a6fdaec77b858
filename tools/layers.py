"""Layers go one way: every intra-package import (module level and inside functions) of openchatkit/*.py goes to the
module of a LOWER-numbered notebook (numbers from `#| default_exp` in nbs/NN_*.ipynb) and imports no `_private` name.

    python tools/layers.py [ROOT] [-v]     # exit 1 and one BAD line per import that breaks the rule"""
import ast, json, re, sys
from pathlib import Path
root = Path(next((a for a in sys.argv[1:] if not a.startswith("-")), "."))
num = {}
for nb in sorted((root/'nbs').glob('*.ipynb')):
    m = re.match(r'(\d+)_', nb.name)
    if not m: continue
    for c in json.loads(nb.read_text())['cells']:
        s = ''.join(c['source'])
        mm = re.search(r'^#\|\s*default_exp\s+(\S+)', s, re.M)
        if c['cell_type'] == 'code' and mm: num[mm.group(1)] = int(m.group(1))
bad = 0
for f in sorted((root/'openchatkit').glob('*.py')):
    mod = f.stem
    if mod not in num: continue
    for node in ast.walk(ast.parse(f.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level: target = (node.module or '').split('.')[0]; names = [a.name for a in node.names]
            elif node.module and node.module.split('.')[0] == 'openchatkit':
                parts = node.module.split('.')
                if len(parts) == 1: target, names = None, [a.name for a in node.names]   # from openchatkit import x
                else: target, names = parts[1], [a.name for a in node.names]
            else: continue
            if target is None: targets = [(n, []) for n in names]
            else: targets = [(target, names)]
        elif isinstance(node, ast.Import):
            targets = [(a.name.split('.')[1], []) for a in node.names if a.name.startswith('openchatkit.')]
        for t, names in targets:
            probs = []
            if t not in num: probs.append(f'unknown module {t}')
            elif num[t] >= num[mod]: probs.append(f'goes up/sideways ({num[mod]} -> {num[t]})')
            priv = [n for n in names if n.startswith('_')]
            if priv: probs.append(f'private names {priv}')
            line = f'{f.name}:{node.lineno}: {mod}({num[mod]}) -> {t}({num.get(t)}) {names}'
            if probs: bad += 1; print('BAD', line, '; '.join(probs))
            elif '-v' in sys.argv: print('ok ', line)
print(f'{bad} bad imports'); sys.exit(1 if bad else 0)
