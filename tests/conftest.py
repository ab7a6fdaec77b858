"Shared test setup: the console scripts of the interpreter running the tests are on PATH (CI calls .venv/bin/python directly)."
import os, sys
from pathlib import Path

_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get('PATH', '').split(os.pathsep): os.environ['PATH'] = _bin + os.pathsep + os.environ.get('PATH', '')
