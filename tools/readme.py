#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb without quarto (which cannot be installed offline).

    python tools/readme.py           # write README.md
    python tools/readme.py --check   # exit 1 if README.md differs from what the notebook gives

Markdown cells are copied; code cells become ```python blocks (with their text output, if any); cells whose
first line is `#| hide` are left out, and `#|` directive lines are dropped."""
import sys, json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        lines = src.split('\n')
        if any(l.replace(' ', '') == '#|hide' for l in lines if l.startswith('#|')): continue
        if c['cell_type'] == 'markdown':
            out.append(src.strip())
            continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if not code: continue
        out.append(f"```python\n{code}\n```")
        texts = [''.join(o.get('text', '')) for o in c.get('outputs', []) if o.get('output_type') == 'stream']
        texts += [''.join(o['data']['text/plain']) for o in c.get('outputs', []) if 'data' in o and 'text/plain' in o['data']]
        if any(t.strip() for t in texts): out.append("```\n" + '\n'.join(t.rstrip() for t in texts if t.strip()) + "\n```")
    return "<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n" + '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            print('README.md is out of date with nbs/index.ipynb: run python tools/readme.py')
            sys.exit(1)
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8')
        print('wrote README.md')
