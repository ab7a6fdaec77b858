"""Multi-process training tests (2 processes, gloo): equivalence with a single-process loop, exact resume (also on
another pipeline size and after kill -9 during a checkpoint write), conversion, bad input, and the feature matrix."""
import os, json, time, shutil, signal, subprocess
import pytest, torch

os.environ['HF_HUB_OFFLINE'] = '1'
from openchatkit.tiny import save_tiny_model
from openchatkit.data import write_jsonl
from openchatkit.config import load_train_config
from openchatkit.checkpoint import read_metrics
from openchatkit.trainer import reference_train
from openchatkit.train import launch_training, launch_command
from openchatkit.convert import convert_checkpoint, verify_conversion, pipeline_model

pytestmark = pytest.mark.timeout(900)

def _texts():
    return [f"<human>: What is {a} plus {b}?\n<bot>: {a} plus {b} is {a+b}." for a in range(10, 70) for b in (3, 17, 28)]

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp('train')
    t = _texts()
    write_jsonl(d/'train.jsonl', [{'text': x} for x in t[:150]])
    write_jsonl(d/'eval.jsonl', [{'text': x} for x in t[150:]])
    neox = save_tiny_model(d/'neox', 'gpt_neox', texts=t, layers=4, hidden=64)
    base = dict(model=str(neox), data=str(d/'train.jsonl'), seq_length=32, micro_batch_size=2, gradient_accumulation_steps=2,
                total_steps=6, lr=2e-3, warmup_steps=2, checkpoint_every=3, progress=False, log_backend='none', seed=7)
    return d, base

def run(cfg, nproc, *ov, env=None):
    r = launch_training(cfg, nproc, list(ov), capture=True, timeout=600, check=False, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def losses(out): return [r['loss'] for r in read_metrics(out)]

@pytest.fixture(scope='module')
def straight(env):
    "The uninterrupted pp=2 x dp=1 run, 6 steps, checkpoints at 3 and 6."
    d, base = env
    out = d/'A'
    run({**base, 'pipeline_parallel': 2, 'output_dir': str(out)}, 2)
    return out

def _reference(cfg, dp=1):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try: return reference_train(load_train_config(cfg), dp=dp)
    finally: torch.set_num_threads(n)

def _close_weights(ckpt, model, atol):
    pm = pipeline_model(ckpt).state_dict()
    ref = model.state_dict()
    assert set(pm) == set(ref)
    worst = max((pm[k] - ref[k]).abs().max().item() for k in ref)
    assert worst <= atol, worst

def test_equivalence_pp2_dp2_single(env, straight):
    d, base = env
    ref_losses, ref_model = _reference({**base, 'output_dir': str(d/'ref')})
    assert losses(straight) == pytest.approx(ref_losses, rel=1e-5), (losses(straight), ref_losses)
    _close_weights(straight/'checkpoints', ref_model, 1e-4)
    # pp=1 x dp=2: the reference reads the two data-parallel streams in turn
    out = d/'B'
    run({**base, 'pipeline_parallel': 1, 'output_dir': str(out)}, 2)
    ref2, model2 = _reference({**base, 'output_dir': str(d/'ref2')}, dp=2)
    assert losses(out) == pytest.approx(ref2, rel=1e-5), (losses(out), ref2)
    _close_weights(out/'checkpoints', model2, 1e-4)
    assert ref2 != pytest.approx(ref_losses, rel=1e-3)      # the dp=2 run really saw other data

def _fork_at(src, dst, tag='global_step3'):
    (dst/'checkpoints').mkdir(parents=True)
    shutil.copytree(src/'checkpoints'/tag, dst/'checkpoints'/tag)
    (dst/'checkpoints'/'latest').write_text(tag)

def test_resume_exact_and_on_other_pipeline_size(env, straight):
    d, base = env
    A = losses(straight)
    for name, pp, nproc in [('R2', 2, 2), ('R1', 1, 1)]:
        out = d/name
        _fork_at(straight, out)
        r = run({**base, 'pipeline_parallel': pp, 'output_dir': str(out)}, nproc)
        assert 'resumed from' in r.stdout
        got = [x['loss'] for x in read_metrics(out)]
        assert [x['step'] for x in read_metrics(out)] == [4, 5, 6]
        if pp == 2: assert got == pytest.approx(A[3:], rel=1e-6, abs=0), (got, A[3:])   # same topology: exact
        else: assert got == pytest.approx(A[3:], rel=1e-5), (got, A[3:])
    # conversion of the pp=2 run: logits equal the trained pipeline layers
    hf = convert_checkpoint(straight/'checkpoints', d/'A_hf')
    assert verify_conversion(straight/'checkpoints', hf) == 0.0

def test_kill_during_checkpoint_write_then_resume(env):
    "kill -9 torchrun AND its workers while rank 1 is inside the step-6 save: latest must still name step 3."
    d, base = env
    out = d/'K'
    cfg = {**base, 'pipeline_parallel': 2, 'output_dir': str(out), 'dropout': 0.1}
    import yaml
    out.mkdir()
    (out/'cfg.yaml').write_text(yaml.safe_dump(cfg))
    env_ = {**os.environ, 'OCK_TEST_SLOW_SAVE': '1:900', 'OMP_NUM_THREADS': '1', 'DS_ACCELERATOR': 'cpu'}
    log = open(out/'log.txt', 'w')
    p = subprocess.Popen(launch_command(out/'cfg.yaml', [], 2), env=env_, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while '(slow) about to write' not in (out/'log.txt').read_text():
        assert p.poll() is None and time.time() - t0 < 600, (out/'log.txt').read_text()[-3000:]
        time.sleep(0.5)
    part = out/'checkpoints'/'global_step6.tmp'      # wait (no fixed sleep) until rank 0 has written its whole part:
    t0 = time.time()                                 # its RNG file comes after its layer files
    while not (part/'rng_rank00000.pt').exists():
        assert p.poll() is None and time.time() - t0 < 600, (out/'log.txt').read_text()[-3000:]
        time.sleep(0.2)
    workers = subprocess.run(['pgrep', '-P', str(p.pid)], capture_output=True, text=True).stdout.split()
    for pid in workers + [str(p.pid)]:
        try: os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError: pass
    p.wait()
    log.close()
    ck = out/'checkpoints'
    assert (ck/'latest').read_text() == 'global_step3'
    assert not (ck/'global_step6').exists()
    part = ck/'global_step6.tmp'                     # half written: some DeepSpeed files, no meta.json
    assert part.exists() and any(part.glob('layer_*')) and not (part/'meta.json').exists(), list(part.iterdir())
    first = [json.loads(l) for l in (out/'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in first] == [1, 2, 3, 4, 5, 6]         # it had trained to 6 before the kill
    r = run(cfg, 2)
    assert 'removing incomplete' in r.stdout and 'resumed from' in r.stdout
    again = [json.loads(l) for l in (out/'metrics.jsonl').read_text().splitlines()][6:]
    assert [x['step'] for x in again] == [4, 5, 6]
    # dropout 0.1: equal only if RNG, data position, optimizer and schedule were all restored
    assert [x['loss'] for x in again] == pytest.approx([x['loss'] for x in first[3:]], rel=1e-6)
    assert (ck/'latest').read_text() == 'global_step6' and not (ck/'global_step6.tmp').exists()

def _cli(*args, cwd=None):
    r = subprocess.run(['ock-train', *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    return r.returncode, r.stdout + r.stderr

def test_bad_input_is_one_line(env):
    import yaml
    d, base = env
    good = d/'good.yaml'
    good.write_text(yaml.safe_dump({**base, 'pipeline_parallel': 2, 'output_dir': str(d/'bad_run')}))
    gpt2 = d/'gpt2'
    gpt2.mkdir(exist_ok=True)
    (gpt2/'config.json').write_text(json.dumps({'model_type': 'gpt2'}))
    cases = [((good, 'learning_rate=1'), "unknown config key 'learning_rate'"),
             ((good, '--nproc', 3), 'world size 3 is not a multiple of pipeline_parallel 2'),
             ((good, f'data={d}/missing.jsonl'), 'missing.jsonl'),
             ((good, f'model={gpt2}'), "unknown model family 'gpt2'"),
             ((good, f'model={d}/no_model'), 'no such directory'),
             ((d/'nope.yaml',), 'no such config file')]
    corrupt = d/'corrupt'
    (corrupt/'checkpoints'/'global_step3').mkdir(parents=True)
    (corrupt/'checkpoints'/'latest').write_text('global_step3')
    cases.append(((good, f'output_dir={corrupt}'), 'incomplete checkpoint (no meta.json)'))
    for args, msg in cases:
        rc, out = _cli(*args)
        lines = [l for l in out.strip().splitlines() if 'real_accelerator' not in l]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith('error: ') and msg in lines[0], (args, out)

def test_features_tied_llama_amp_checkpointing_8bit_and_zero2(env):
    d, base = env
    llama = save_tiny_model(d/'llama', 'llama', texts=_texts(), layers=4, tie_word_embeddings=True)
    out = d/'F'
    run({**base, 'model': str(llama), 'pipeline_parallel': 2, 'output_dir': str(out), 'precision': 'amp-bf16',
         'activation_checkpointing': True, 'optimizer': 'adamw8bit', 'lr_schedule': 'cosine', 'lr': 5e-3,
         'eval_data': str(d/'eval.jsonl'), 'eval_every': 3, 'eval_batches': 2}, 2)
    recs = read_metrics(out)
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in recs) and recs[-1]['loss'] < recs[0]['loss']
    assert 'eval_loss' in recs[2] and 'eval_ppl' in recs[-1] and (out/'loss_curve.png').stat().st_size > 1000
    hf = convert_checkpoint(out/'checkpoints', d/'F_hf')
    assert verify_conversion(out/'checkpoints', hf) == 0.0
    # ZeRO-2 (pipeline size 1, DeepSpeed's plain engine) in bf16 on 2 data-parallel ranks
    z = d/'Z'
    run({**base, 'pipeline_parallel': 1, 'zero_stage': 2, 'precision': 'bf16', 'output_dir': str(z), 'total_steps': 3}, 2)
    rz = read_metrics(z)
    assert len(rz) == 3 and all(torch.isfinite(torch.tensor(r['loss'])) for r in rz)
    assert verify_conversion(z/'checkpoints', convert_checkpoint(z/'checkpoints', d/'Z_hf')) == 0.0

@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_fp16_checkpoint_trains_in_the_precision_asked(env, precision):
    """A model saved in fp16 (the shipped tiny-chat, most hub checkpoints) trained with `precision: fp32` died inside DeepSpeed
    with `attempting to reduce an unsupported grad type: torch.float16`: its weights trained in the dtype they were saved in."""
    import glob
    from transformers import AutoModelForCausalLM
    d, base = env
    half = d/'neox-fp16'
    if not half.exists():
        shutil.copytree(base['model'], half)
        AutoModelForCausalLM.from_pretrained(base['model'], dtype=torch.float16).save_pretrained(half)
    assert json.loads((half/'config.json').read_text())['dtype'] == 'float16'
    out = d/f'half-{precision}'
    run({**base, 'model': str(half), 'pipeline_parallel': 2, 'precision': precision, 'total_steps': 2, 'checkpoint_every': 2,
         'output_dir': str(out)}, 2)
    for f in glob.glob(str(out/'checkpoints'/'global_step2'/'layer_*-model_states.pt')):
        want = torch.float32 if precision == 'fp32' else torch.bfloat16      # bf16: DeepSpeed's bf16 weights (fp32 masters)
        assert {v.dtype for v in torch.load(f, map_location='cpu').values()} == {want}, f
    assert all(r['loss'] == r['loss'] for r in read_metrics(out))                # finite losses (not NaN)
