"""The original's big runs (recipes/*.ipynb) end to end at tiny size: each notebook run headless by `ock-run` with
overriding parameters (a tiny GPT-NeoX or Llama, a few hundred synthetic chats, two steps on CPU processes), its
executed notebook saved and its converted model loading with transformers; and the ways `ock-run` refuses or fails."""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
OCK_RUN = Path(sys.executable).parent/'ock-run'
TINY = 'warmup_steps=1 seq_length=64 gradient_accumulation_steps=1 micro_batch_size=2 progress=false checkpoint_every=0'

# recipe: (tiny model family, pipeline stages = processes). The 20B run keeps a real 2-stage pipeline.
RECIPES = {'pythia_chat_base_7b': ('gpt_neox', 1), 'gpt_neoxt_chat_base_20b': ('gpt_neox', 2),
           'redpajama_incite_chat_3b': ('gpt_neox', 1), 'redpajama_incite_chat_7b': ('gpt_neox', 1),
           'llama2_7b_32k_mqa': ('llama', 1), 'llama2_7b_32k_booksum': ('llama', 1)}

def _cuda():
    import torch
    return torch.cuda.is_available()

def ock_run(*args, timeout=300):
    return subprocess.run([str(OCK_RUN), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'WANDB_MODE': 'disabled'})

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from openchatkit.tiny import save_tiny_model
    from openchatkit.synthetic import write_chat_data
    d = tmp_path_factory.mktemp('tiny')
    return dict(gpt_neox=save_tiny_model(d/'neox', 'gpt_neox'), llama=save_tiny_model(d/'llama', 'llama'),
                data=write_chat_data(d/'data', n_train=300, n_test=10)['chat_train'])

def test_every_recipe_has_a_notebook():
    have = {p.stem for p in (ROOT/'recipes').glob('*.ipynb')}
    assert set(RECIPES) <= have, set(RECIPES) - have
    for name in RECIPES: assert (ROOT/'recipes'/'configs'/f'{name}.yaml').exists(), name

@pytest.mark.parametrize('name', list(RECIPES))
def test_recipe_tiny(name, tiny, tmp_path):
    family, pp = RECIPES[name]
    r = ock_run(f'recipes/{name}.ipynb', '-p', 'model', tiny[family], '-p', 'data', tiny['data'], '-p', 'output_dir', tmp_path/'run',
                '-p', 'total_steps', 2, '-p', 'nproc', pp, '-p', 'allow_cpu', True, '-p', 'dtype', 'fp32',
                '-p', 'overrides', f'pipeline_parallel={pp} {TINY}', '--out', tmp_path/'nb')
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert 'trained: step 2' in r.stdout, r.stdout[-3000:]                     # cell output streamed
    saved = list((tmp_path/'nb').glob(f'{name}-*.ipynb'))
    assert len(saved) == 1 and re.fullmatch(rf'{name}-\d{{8}}-\d{{6}}\.ipynb', saved[0].name), saved
    nb = json.loads(saved[0].read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])
    metrics = [json.loads(l) for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()]
    assert metrics[-1]['step'] == 2
    assert (tmp_path/'run'/'loss_curve.png').exists()
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(tmp_path/'run-hf').eval()
    assert m.config.model_type == family
    if family == 'llama':                    # the 32K recipes' position interpolation reaches the converted model
        rs = m.config.rope_scaling
        assert (rs.get('rope_type', rs.get('type')), rs['factor'], m.config.max_position_embeddings) == ('linear', 8.0, 32768), rs
    with torch.no_grad(): logits = m(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()

def test_failing_cell_is_named(tiny, tmp_path):
    "A cell that raises: exit 2, one line naming the cell and the saved notebook, which holds the traceback."
    r = ock_run('recipes/redpajama_incite_chat_3b.ipynb', '-p', 'model', tmp_path/'no-such-model', '-p', 'allow_cpu', True,
                '-p', 'data', tiny['data'], '--out', tmp_path/'nb', timeout=120)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2, r.stderr[-3000:]
    m = re.fullmatch(r"error: recipes/redpajama_incite_chat_3b\.ipynb: cell 6 \('r\.prepare_model\(\)'\) failed: OCKError: "
                     r".*no-such-model.*; executed notebook: (\S+)", last)
    assert m, last
    saved = Path(m.group(1)) if Path(m.group(1)).is_absolute() else ROOT/m.group(1)
    assert saved.exists() and 'OCKError' in saved.read_text()

@pytest.mark.skipif('_cuda()', reason='the guard is for machines without CUDA')
def test_full_size_refused_without_cuda(tmp_path):
    "A recipe at full size on a machine without CUDA stops in its first step, before any download."
    r = ock_run('recipes/pythia_chat_base_7b.ipynb', '--out', tmp_path/'nb', timeout=120)
    assert r.returncode == 2
    assert re.search(r"cell 4 \('from openchatkit.runner import Recipe'\) failed: OCKError: pythia_chat_base_7b.yaml is a GPU run "
                     r".* no CUDA GPU; set allow_cpu=True", r.stderr), r.stderr[-2000:]

def test_unknown_and_mistyped_parameters(tmp_path):
    "Parameter names and types are checked against the notebook before any kernel starts."
    r = ock_run('recipes/llama2_7b_32k_booksum.ipynb', '-p', 'total_step', 2, '--out', tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: recipes/llama2_7b_32k_booksum.ipynb: unknown parameter 'total_step' (did you mean 'total_steps'?); its parameters are: "
        "config, model, data, data_preset, output_dir, total_steps, overrides, nproc, nnodes, node_rank, master_addr, master_port, "
        "convert, dtype, allow_cpu"), r.stderr
    r = ock_run('recipes/llama2_7b_32k_booksum.ipynb', '-p', 'total_steps', 'ten', '--out', tmp_path)
    assert r.returncode == 2 and "parameter 'total_steps' expects an int (default 10), got 'ten'" in r.stderr, r.stderr
    r = ock_run('recipes/no_such_recipe.ipynb')
    assert (r.returncode, r.stderr.strip()) == (2, 'error: recipes/no_such_recipe.ipynb: no such notebook')
    assert not list(tmp_path.iterdir())                                        # nothing ran, nothing saved
