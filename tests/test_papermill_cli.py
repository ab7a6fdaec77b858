"""Recipes run by papermill's own CLI, which passes every `-p` value that is not a number or a bool as text: a dict or
list parameter (`-p skill_weights '{}'`) must work there as it does through `ock-run`. Run on the tiny chat recipe's
cells up to its data step (parameters, imports, data), which is where the parameter is used."""
import os, sys, json, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPERMILL = str(Path(sys.executable).parent/'papermill')

@pytest.fixture(scope='module')
def head(tmp_path_factory):
    "recipes/tiny_chat.ipynb cut after its data cell (the one that calls `chat_examples(..., skill_weights=...)`)."
    nb = json.loads((ROOT/'recipes'/'tiny_chat.ipynb').read_text())
    i = next(i for i, c in enumerate(nb['cells']) if 'chat_examples(' in ''.join(c['source']))
    nb['cells'] = nb['cells'][:i + 1]
    p = tmp_path_factory.mktemp('pm')/'tiny_chat_head.ipynb'
    p.write_text(json.dumps(nb))
    return p

def _papermill(nb, out, *params):
    return subprocess.run([PAPERMILL, str(nb), str(out), '--cwd', str(ROOT), '--no-progress-bar',
                           '-p', 'n_train', '40', '-p', 'n_test', '9', '-p', 'out_dir', str(out.parent/'tc'), *params],
                          capture_output=True, text=True, timeout=600, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false'})

@pytest.mark.timeout(900)
@pytest.mark.parametrize('value', ['{}', '{add: 3, sub: 0.5}'])
def test_dict_parameter_from_papermill_cli(head, tmp_path, value):
    "Failed before: `OCKError: unknown skill(s) in weights: {, }` (the text '{}' taken as the weights)."
    r = _papermill(head, tmp_path/'out.ipynb', '-p', 'skill_weights', value)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (tmp_path/'tc'/'data'/'chat_train.jsonl').read_text().splitlines()
    assert len(rows) == 40

def test_bad_dict_parameter_is_one_clear_error(head, tmp_path):
    r = _papermill(head, tmp_path/'out.ipynb', '-p', 'skill_weights', 'add')
    assert r.returncode != 0
    assert "parameter 'skill_weights' expects a dict (a Python literal or YAML, e.g. {}), got 'add'" in r.stderr, r.stderr[-3000:]
