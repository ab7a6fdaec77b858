"""LoRA across processes and end to end: `ock-train` with `lora: true` under torchrun (2 data-parallel processes, gloo)
matches a one-process emulation of the same 2 replicas, resumes exactly after a stop, merges via `ock-convert --merge-lora`
and replies through `ock-chat --adapter` as the merged model does; one-line errors from `ock-train --check`; and the
RedPajama-3B LoRA recipe notebook at tiny size through papermill."""
import os, sys, json, subprocess
from pathlib import Path
import pytest, torch

os.environ['HF_HUB_OFFLINE'] = '1'
from openchatkit.tiny import save_tiny_model
from openchatkit.synthetic import skill_examples
from openchatkit.data import write_jsonl
from openchatkit.config import load_train_config
from openchatkit.checkpoint import read_metrics
from openchatkit.train import launch_training

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(600)

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp('lora')
    ex = skill_examples(240, seed=5, skills=('add', 'sub', 'compare'), p_preamble=0.0)
    write_jsonl(d/'train.jsonl', ex[:200])
    write_jsonl(d/'eval.jsonl', ex[200:])
    neox = save_tiny_model(d/'neox', 'gpt_neox', texts=[e['text'] for e in ex], layers=2, hidden=64)
    base = dict(model=str(neox), data=str(d/'train.jsonl'), seq_length=32, micro_batch_size=2, gradient_accumulation_steps=2,
                total_steps=6, lr=1e-2, warmup_steps=2, checkpoint_every=3, progress=False, log_backend='none', seed=7,
                lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target='all-linear', eval_data=str(d/'eval.jsonl'),
                eval_every=3, eval_batches=2)
    return d, base

def run(cfg, nproc, *ov):
    r = launch_training(cfg, nproc, list(ov), capture=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def losses(out): return [r['loss'] for r in read_metrics(out)]

def adapter(out):
    from safetensors.torch import load_file
    return load_file(Path(out)/'adapter'/'adapter_model.safetensors')

def test_torchrun_dp2_matches_emulation_and_resumes(env):
    d, base = env
    a = d/'A'
    run({**base, 'output_dir': str(a)}, 2)                                   # 2 processes, 6 steps straight
    # the same 2 replicas in one process (streams read in turn): the all-reduce averages exactly this
    from openchatkit.lora import LoraTrainer
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = LoraTrainer(load_train_config({**base, 'output_dir': str(d/'E')}), emulate_dp=2).setup()
        t.run()
    finally: torch.set_num_threads(n)
    assert losses(a) == pytest.approx(losses(d/'E'), rel=1e-5, abs=1e-6), (losses(a), losses(d/'E'))
    ev = lambda out: [v for r in read_metrics(out) if 'eval_loss' in r for v in (r['eval_loss'], r['grad_norm'])]
    assert len(ev(a)) == 4 and ev(a) == pytest.approx(ev(d/'E'), rel=1e-5), (ev(a), ev(d/'E'))
    ea, ee = adapter(a), adapter(d/'E')
    assert ea.keys() == ee.keys() and max((ea[k] - ee[k]).abs().max().item() for k in ea) < 1e-5
    meta = json.loads((a/'checkpoints'/'global_step6'/'meta.json').read_text())
    assert (meta['engine'], meta['dp'], meta['world'], meta['pp']) == ('lora', 2, 2, 1)
    assert {f'data_dp0000{i}.pt' for i in (0, 1)} | {f'rng_rank0000{i}.pt' for i in (0, 1)} <= set(meta['files'])
    # stopped at 3, resumed to 6 (2 processes again): the uninterrupted run's losses and adapter
    b = d/'B'
    run({**base, 'output_dir': str(b), 'stop_at': 3}, 2)
    assert len(losses(b)) == 3 and (b/'checkpoints'/'latest').read_text() == 'global_step3'
    r = run({**base, 'output_dir': str(b)}, 2, 'resume=must')
    assert 'resumed from' in r.stdout + r.stderr
    assert losses(b) == losses(a)
    eb = adapter(b)
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    # ock-convert --merge-lora on the run directory: a plain model that loads without peft
    m = subprocess.run([BIN/'ock-convert', a, d/'merged', '--merge-lora', '--verify'], capture_output=True, text=True)
    assert m.returncode == 0 and 'logits verified' in m.stdout, m.stdout + m.stderr
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(d/'merged').config.model_type == 'gpt_neox'
    # ock-chat with the adapter the trainer wrote replies as the merged model does (greedy)
    chat = lambda *a: subprocess.run([BIN/'ock-chat', *map(str, a), '--no-sample', '--max-tokens', '8', '--no-stream'],
                                     input='What is 12 plus 30?\n', capture_output=True, text=True, timeout=120)
    ra, rm = chat('--model', base['model'], '--adapter', a/'adapter'), chat('--model', d/'merged')
    assert ra.returncode == 0 and rm.returncode == 0, ra.stderr + rm.stderr
    session = lambda r: r.stdout.split('\n', 1)[1]                            # after the 'Loading …' line
    assert session(ra) == session(rm), (ra.stdout, rm.stdout)
    # a random tiny model's greedy chat reply may end at once (a stop word): compare 8 tokens with no stop word as well
    from openchatkit.inference import ChatModel
    gen = lambda cm: cm.generate('<human>: What is 12 plus 30?\n<bot>:', do_sample=False, max_new_tokens=8, stop=())
    ga, gm = gen(ChatModel.load(base['model'], adapter=str(a/'adapter'), device='cpu')), gen(ChatModel.load(str(d/'merged'), device='cpu'))
    assert ga.strip() and ga == gm, (ga, gm)
    bad = subprocess.run([BIN/'ock-convert', a, d/'x'], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and 'add --merge-lora' in bad.stderr, bad.stderr

def test_ock_train_check_lora(env, tmp_path):
    import yaml
    d, base = env
    (tmp_path/'c.yaml').write_text(yaml.safe_dump({**base, 'output_dir': str(tmp_path/'run')}))
    ok = subprocess.run([BIN/'ock-train', tmp_path/'c.yaml', '--nproc', '2', '--check'], capture_output=True, text=True)
    assert ok.returncode == 0 and 'LoRA r=4' in ok.stdout and 'dp 2' in ok.stdout, ok.stdout + ok.stderr
    # the rest: 22_config, 25_lora
    for ov, msg in [('pipeline_parallel=2', 'lora runs data-parallel only: pipeline_parallel must be 1, got 2')]:
        r = subprocess.run([BIN/'ock-train', tmp_path/'c.yaml', ov, '--nproc', '2', '--check'], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and msg in r.stderr, (ov, r.stderr)

def _cuda():
    return torch.cuda.is_available()

def test_recipe_refuses_cpu_at_full_size(tmp_path):
    import papermill as pm
    if _cuda(): pytest.skip('this machine has CUDA: the full-size guard does not apply')
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT/'recipes'/'lora_redpajama_3b.ipynb'), str(tmp_path/'out.ipynb'), cwd=str(ROOT),
                            parameters=dict(output_dir=str(tmp_path/'run')), progress_bar=False, kernel_name='python3')
    assert 'no CUDA GPU' in str(e.value) and 'allow_cpu' in str(e.value)
    assert not (tmp_path/'run').exists() and not (ROOT/'pretrained'/'togethercomputer_RedPajama-INCITE-Chat-3B-v1').exists()

def test_recipe_tiny(env, tmp_path):
    "The recipe notebook end to end at tiny size on a CPU: plan, train (QLoRA), adapter, merge, a reply."
    import papermill as pm
    d, _ = env
    out = tmp_path/'run'
    pm.execute_notebook(str(ROOT/'recipes'/'lora_redpajama_3b.ipynb'), str(tmp_path/'out.ipynb'), cwd=str(ROOT), progress_bar=False,
                        kernel_name='python3', parameters=dict(
                            model=str(d/'neox'), data=str(d/'train.jsonl'), output_dir=str(out), total_steps=3, nproc=1,
                            load_in_4bit=True, dtype='fp32', allow_cpu=True, prompt='<human>: What is 2 plus 3?\n<bot>:',
                            overrides='seq_length=64 pack=split micro_batch_size=2 gradient_accumulation_steps=1 warmup_steps=1 '
                                      'checkpoint_every=0 progress=false activation_checkpointing=false'))
    assert [r['step'] for r in read_metrics(out)] == [1, 2, 3]
    assert (out/'adapter'/'adapter_model.safetensors').exists() and (out/'loss_curve.png').exists()
    cfg = json.loads((out/'checkpoints'/'global_step3'/'meta.json').read_text())['config']
    assert (cfg['lora_r'], cfg['lora_alpha'], cfg['lora_target'], cfg['lr'], cfg['load_in_4bit'], cfg['precision']) == \
           (16, 32, ['query_key_value'], 2e-4, True, 'fp32')
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(f'{out}-merged')
    assert m.config.model_type == 'gpt_neox' and json.loads(Path(f'{out}-merged', 'lora_merge.json').read_text())['step'] == 3
    text = json.dumps(json.loads((tmp_path/'out.ipynb').read_text())['cells'][-1].get('outputs', []))
    assert 'What is 2 plus 3?' in text
