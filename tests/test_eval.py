"""`ock-eval` as a user runs it, offline: the shipped tiny model graded on the shipped lm-eval task (a generation task
by exact match and a multiple-choice task by log-likelihood) through lm-eval's `hf` model, a question file asked one
question per chat and in conversations, and one-line errors with exit status 2."""
import json, subprocess, sys
from pathlib import Path
import pytest
import conftest

from openchatkit.inference import default_model

ENV = {**conftest.ENV, 'CUDA_VISIBLE_DEVICES': ''}

@pytest.fixture(autouse=True)
def shipped_model():
    "The repository ships the tiny chat model: without it every test here fails, saying so."
    assert default_model() is not None, 'the shipped tiny-chat model is missing from this install'

def ock_eval(*args, timeout=300):
    exe = Path(sys.executable).with_name('ock-eval')
    if not exe.exists():            # an install older than the script: run what its entry point would run
        import tempfile
        exe = Path(tempfile.gettempdir())/'ock-eval-entry.py'
        exe.write_text('import sys\nfrom openchatkit.eval import ock_eval\nsys.exit(ock_eval())\n')
    cmd = [str(exe)] if exe.suffix != '.py' else [sys.executable, str(exe)]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV)

def test_lm_eval_local_task_on_shipped_model(tmp_path):
    "Both shipped lm-eval tasks give a score, not an error, and the shipped model does well on them."
    r = ock_eval(default_model(), 'tiny_skills', '--limit', 12, '--out', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'results.json').read_text())
    gen, mc = res['tasks']['lm_eval:tiny_skills_gen']['metrics'], res['tasks']['lm_eval:tiny_skills_mc']['metrics']
    assert 0.5 <= gen['exact_match'] <= 1 and 0.5 <= mc['acc'] <= 1, (gen, mc)
    md = (tmp_path/'results.md').read_text()
    assert 'tiny_skills_gen' in md and 'exact_match' in md and 'tiny_skills_mc' in md
    assert 'lm_eval:tiny_skills_gen' in r.stdout

def test_questions_alone_and_in_conversations(tmp_path):
    "A prompt/answer file: exact match one question per chat, and by turn in conversations made of the same questions."
    from openchatkit.synthetic import skill_examples
    f = tmp_path/'qs.jsonl'
    f.write_text(''.join(json.dumps(e) + '\n' for e in skill_examples(8, seed=0, split='test')))
    r = ock_eval(default_model(), f, f'conversation:{f}', '--turns', 4, '-o', tmp_path/'out')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'out'/'results.json').read_text())
    single, conv = res['tasks']['exact_match:qs']['report'], res['tasks']['conversation:qs']['report']
    assert single['n'] == 8 and conv['n'] == 8 and sorted(conv['by_turn']) == ['1', '2', '3', '4']
    assert single['mean'] >= 50, single
    assert (tmp_path/'out'/'exact_match.png').stat().st_size > 1000
    assert len((tmp_path/'out'/'samples.jsonl').read_text().splitlines()) == 16

@pytest.mark.parametrize('args,msg', [(['nofile.jsonl'], 'nofile.jsonl: no such file'),
                                      (['tasks/none.yaml'], 'tasks/none.yaml: no such task file'),
                                      (['tiny_skills', '--limit', '0'], '--limit must be at least 1')])
def test_bad_input_is_one_line(args, msg):
    r = ock_eval(default_model(), *args, timeout=120)
    assert r.returncode == 2 and msg in r.stderr and r.stderr.strip().count('\n') == 0, r.stderr
