#!/usr/bin/env python
"""`nbdev_clean`, then the notebook metadata JupyterLab would write, so that a notebook is not marked modified on open.

    python tools/nbclean.py            # clean nbs/*.ipynb (nbdev_clean) and set the metadata of nbs/ and recipes/
    python tools/nbclean.py --check    # change nothing; exit 1 naming each notebook whose metadata is not as set here

When JupyterLab starts a notebook's kernel it writes two metadata keys: `kernelspec` (with the kernel's display name,
"Python 3 (ipykernel)") and `language_info` (what the kernel reports). If the stored values differ, the notebook is
marked modified before the reader has touched it, and closing it asks to save. `nbdev_clean` sets the display name to
the kernel's name ("python3") and, unless settings.ini's `allowed_metadata_keys` names it, drops `language_info`.
So this script stores both as the project's kernel reports them: ipykernel on the project's Python, 3.11.7 (the
Python that `.ci/install` finds). On another Python only `language_info.version` differs, and the notebook is
marked modified on open as before; nothing else depends on it."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {'display_name': 'Python 3 (ipykernel)', 'language': 'python', 'name': 'python3'}
LANGUAGE_INFO = {'codemirror_mode': {'name': 'ipython', 'version': 3}, 'file_extension': '.py', 'mimetype': 'text/x-python',
                 'name': 'python', 'nbconvert_exporter': 'python', 'pygments_lexer': 'ipython3', 'version': '3.11.7'}

def notebooks(root: Path = ROOT) -> list[Path]:
    "The notebooks a reader opens: the walkthroughs in nbs/ and the recipes."
    return sorted((root/'nbs').glob('*.ipynb')) + sorted((root/'recipes').glob('*.ipynb'))

def set_metadata(path: Path, check: bool = False) -> bool:
    "Store `KERNELSPEC` and `LANGUAGE_INFO` in the notebook at `path` (or with `check`, only say whether they differ)."
    nb = json.loads(path.read_text())
    md = nb.setdefault('metadata', {})
    if md.get('kernelspec') == KERNELSPEC and md.get('language_info') == LANGUAGE_INFO: return False
    if not check:
        md.update(kernelspec=KERNELSPEC, language_info=LANGUAGE_INFO)
        path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n')
    return True

def main(args: list[str]) -> int:
    check = '--check' in args
    if not check: subprocess.run([Path(sys.executable).parent/'nbdev_clean'], cwd=ROOT, check=True)
    changed = [str(p.relative_to(ROOT)) for p in notebooks() if set_metadata(p, check)]
    if check and changed:
        print(f"kernel metadata not as JupyterLab writes it (run python tools/nbclean.py): {' '.join(changed)}")
        return 1
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
