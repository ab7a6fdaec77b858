#!/usr/bin/env python
"""Convert between a notebook and a 'percent' script, for authoring notebooks in an editor.

    python tools/nbpy.py to-nb SRC.py DEST.ipynb    # cells split on '# %%' lines ('# %% [markdown]' for prose)
    python tools/nbpy.py to-py SRC.ipynb DEST.py

The notebook is the source of truth: the .py form is a scratch copy (keep it out of git)."""
import sys, re
import nbformat as nbf

def to_nb(src, dest):
    text = open(src, encoding='utf-8').read()
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        body = '\n'.join(buf).strip('\n')
        if kind == 'md':
            body = '\n'.join(l[2:] if l.startswith('# ') else ('' if l == '#' else l) for l in body.split('\n'))
            cells.append(nbf.v4.new_markdown_cell(body))
        elif body: cells.append(nbf.v4.new_code_cell(body))
    for line in text.split('\n'):
        m = re.match(r'^# %%(.*)$', line)
        if m:
            flush(); kind = 'md' if '[markdown]' in m.group(1) else 'code'; buf = []
        else: buf.append(line)
    flush()
    nb = nbf.v4.new_notebook(); nb.cells = cells
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    nbf.write(nb, dest)

def to_py(src, dest):
    nb = nbf.read(src, as_version=4); out = []
    for c in nb.cells:
        if c.cell_type == 'markdown': out.append('# %% [markdown]\n' + '\n'.join(('# ' + l) if l else '#' for l in c.source.split('\n')))
        else: out.append('# %%\n' + c.source)
    open(dest, 'w', encoding='utf-8').write('\n\n'.join(out) + '\n')

if __name__ == '__main__':
    cmd, src, dest = sys.argv[1:4]
    {'to-nb': to_nb, 'to-py': to_py}[cmd](src, dest)
