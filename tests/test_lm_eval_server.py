"""lm-evaluation-harness's own CLI against `ock-serve` (the shipped model): its `local-completions` model scores our
small local tasks (tests/lm_eval_tasks: held-out skill questions, one generation task, one multiple-choice task), and
agrees with `--model hf` on the same model directory. Before `/v1/completions` gave log-probabilities, the
multiple-choice task failed with `400 'logprobs' is not supported by this server`."""
import sys, json, subprocess
from pathlib import Path
import pytest
from conftest import serving, CPU_ENV

import lm_eval  # noqa: F401 (a requirement of the package: missing or broken fails here, it does not skip)
BIN = Path(sys.executable).parent
TASKS = Path(__file__).parent/'lm_eval_tasks'
ENV = {**CPU_ENV, 'OPENAI_API_KEY': ''}

@pytest.fixture(scope='module')
def model_dir():
    from openchatkit.inference import default_model
    return default_model()

@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "`ock-serve` with its defaults (the shipped model) on a free loopback port; its base URL."
    with serving('--model-name', 'tiny-chat', log_dir=tmp_path_factory.mktemp('lm_eval'), env=ENV) as url: yield url

def lm_eval(out: Path, model: str, model_args: str, tasks: str, *extra) -> dict:
    "Run lm-eval's CLI (in the tasks' directory: their data_files are relative) and read its results: {task: {metric: value}}."
    r = subprocess.run([str(BIN/'lm_eval'), '--model', model, '--model_args', model_args, '--tasks', tasks, '--include_path', str(TASKS),
                        '--output_path', str(out), *extra], cwd=TASKS, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(out.rglob('results_*.json'))
    assert files, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(files[-1].read_text())['results']

@pytest.fixture(scope='module')
def served(server, model_dir, tmp_path_factory):
    "Both tasks scored through `ock-serve` by lm-eval's `local-completions` (8 prompts per request)."
    args = f"model=tiny-chat,base_url={server}/v1/completions,tokenizer_backend=huggingface,tokenizer={model_dir},max_retries=1"
    return lm_eval(tmp_path_factory.mktemp('served'), 'local-completions', args, 'ock_skills_mc,ock_skills_gen', '--batch_size', '8')

@pytest.mark.timeout(900)
def test_local_completions_scores(served):
    "lm-eval's CLI gets a score, not an error, for a loglikelihood task and a generation task through the server."
    assert served['ock_skills_mc']['acc,none'] >= 0.5          # 4 choices: chance is 0.25
    assert served['ock_skills_gen']['exact_match,strip'] >= 0.5

@pytest.mark.timeout(900)
def test_served_agrees_with_hf(served, model_dir, tmp_path):
    "The same tasks with lm-eval's own `--model hf` on the model directory: within one point."
    hf = lm_eval(tmp_path, 'hf', f'pretrained={model_dir},dtype=float32', 'ock_skills_mc,ock_skills_gen', '--device', 'cpu',
                 '--batch_size', '8')
    assert abs(hf['ock_skills_mc']['acc,none'] - served['ock_skills_mc']['acc,none']) <= 0.01, (hf, served)
    assert abs(hf['ock_skills_gen']['exact_match,strip'] - served['ock_skills_gen']['exact_match,strip']) <= 0.01, (hf, served)
