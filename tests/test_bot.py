"`ock-chat` as a user runs it: console-script subprocesses (bad input, piped sessions) and a real terminal (pexpect)."
import os, sys, subprocess, shutil
from pathlib import Path
import pytest
from fastcore.test import test_eq as eq
from conftest import assert_one_line_error, run_without_shipped_model, CPU_ENV as ENV

BIN = Path(sys.executable).parent
OCK_CHAT = str(BIN/'ock-chat')

def run(*args, stdin='', timeout=300):
    return subprocess.run([OCK_CHAT, *args], input=stdin, capture_output=True, text=True, env=ENV, timeout=timeout)

def _default_sigint():
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)

@pytest.mark.timeout(600)
def test_bad_input_is_one_line(tiny, tmp_path):
    assert_one_line_error(run('--model', str(tmp_path/'missing')), 'does not exist')
    (tmp_path/'notamodel').mkdir()
    (tmp_path/'notamodel'/'readme.txt').write_text('hi')
    assert_one_line_error(run('--model', str(tmp_path/'notamodel')), 'not a model directory')
    assert_one_line_error(run('--model', tiny, '--device', 'tpu'), "unknown device 'tpu'")
    assert_one_line_error(run('--model', tiny, '-g', 'zero:ten'), "bad -g/--gpu-vram value 'zero:ten'")
    assert_one_line_error(run('--model', tiny, '-r', 'lots'), "--cpu-ram", "'lots'")
    assert_one_line_error(run('--model', tiny, '--max-tokens', 'many'), '--max-tokens')
    assert_one_line_error(run('--model', tiny, '--adapter', str(tmp_path/'notamodel')), 'not a LoRA adapter')
    assert_one_line_error(run('--model', tiny, '--top-p', '0'), 'top_p must be')

@pytest.mark.timeout(600)
def test_no_model_needs_model_flag(monkeypatch):
    "An install without the shipped model (e.g. a slimmed wheel) asks for --model, in one line: the CLI, and `ChatModel.load`."
    assert_one_line_error(run_without_shipped_model('bot', 'ock_chat'), 'no model given', 'pass --model')
    from openchatkit import inference
    monkeypatch.setattr(inference, 'default_model', lambda: None)      # what such an install sees, in this process
    with pytest.raises(inference.OCKError, match='no shipped model in this install: pass --model'): inference.ChatModel.load(None)

@pytest.mark.timeout(600)
def test_piped_session(tiny):
    "Flags in OpenChatKit's spelling, commands, and a clean exit at end of input (the original looped forever)."
    r = run('--model', tiny, '--max-tokens', '5', '--no-sample', '--temperature', '0.3', '--top-k', '5',
            '--gpu-id', '0', '--device', 'cpu', '-r', '4', '--no-stream',
            stdin='Hello\n/hyperparameters\n/set top_k 7\n/hyperparameters\n/raw_prompt\n')
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith('Loading ') and 'Welcome to OpenChatKit shell.   Type /help or /? to list commands.' in out
    assert 'max_tokens: 5' in out and 'sample: False' in out and 'temperature: 0.3' in out and 'top_k: 7' in out
    assert '<human>: Hello\n<bot>:' in out and out.rstrip().endswith('>>>')

@pytest.mark.timeout(600)
def test_quit_command(tiny):
    r = run('--model', tiny, stdin='/quit\nHello\n')
    assert r.returncode == 0 and r.stdout.count('>>> ') == 1, r.stdout

@pytest.mark.timeout(600)
def test_terminal_session(tiny):
    "A real pseudo-terminal: streaming output, a command, Ctrl-C at the prompt exits with no traceback."
    pexpect = pytest.importorskip('pexpect')
    # Ctrl-C must reach the shell even when this suite runs as a background job, which starts with SIGINT ignored
    # (a child inherits that, and Python then leaves it ignored): the terminal a person types in has it at its default
    child = pexpect.spawn(OCK_CHAT, ['--model', tiny, '--max-tokens', '8', '--seed', '1'], env=ENV,
                          encoding='utf-8', timeout=300, dimensions=(40, 200), preexec_fn=_default_sigint)
    try:
        child.expect_exact('Type /help or /? to list commands.')
        child.expect_exact('>>> ')
        child.sendline('Hello there')
        child.expect_exact('>>> ')
        child.sendline('/set temperature 0.2')
        child.expect_exact('temperature = 0.2')
        child.expect_exact('>>> ')
        child.sendline('/raw_prompt')
        child.expect_exact('<human>: Hello there')
        child.expect_exact('>>> ')
        child.sendintr()                               # Ctrl-C at the prompt
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert 'Traceback' not in child.before
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)

@pytest.mark.timeout(600)
def test_terminal_ctrl_d(tiny):
    pexpect = pytest.importorskip('pexpect')
    child = pexpect.spawn(OCK_CHAT, ['--model', tiny], env=ENV, encoding='utf-8', timeout=300)
    try:
        child.expect_exact('>>> ')
        child.sendeof()                                # Ctrl-D
        child.expect(pexpect.EOF)
    finally: child.close()
    assert child.exitstatus == 0 and 'Traceback' not in (child.before or '')

@pytest.mark.timeout(600)
@pytest.mark.skipif(not shutil.which('tmux'), reason='tmux not installed')
def test_tmux_streaming(tiny, tmp_path):
    "The same through tmux, as a person would see it: the reply appears and the prompt comes back."
    import time
    name = f'ockchat{os.getpid()}'
    env_args = ' '.join(f'{k}={v}' for k, v in [('HF_HUB_OFFLINE', '1'), ('CUDA_VISIBLE_DEVICES', '')])
    subprocess.run(['tmux', 'new-session', '-d', '-s', name, '-x', '200', '-y', '50',
                    f'env {env_args} {OCK_CHAT} --model {tiny} --max-tokens 6; sleep 30'], check=True)
    def screen(): return subprocess.run(['tmux', 'capture-pane', '-p', '-t', name], capture_output=True, text=True).stdout
    def wait_for(pred, t=90):
        end = time.time() + t
        while time.time() < end:
            s = screen()
            if pred(s): return s
            time.sleep(0.3)
        raise AssertionError(screen())
    try:
        wait_for(lambda s: '>>>' in s)
        subprocess.run(['tmux', 'send-keys', '-t', name, 'Hi bot', 'Enter'], check=True)
        s = wait_for(lambda s: s.count('>>>') >= 2)
        subprocess.run(['tmux', 'send-keys', '-t', name, '/quit', 'Enter'], check=True)
        s = wait_for(lambda s: '/quit' in s)
        assert 'Traceback' not in s and '>>> Hi bot' in s
    finally:
        subprocess.run(['tmux', 'kill-session', '-t', name], capture_output=True)

@pytest.mark.timeout(600)
def test_shipped_model_answers():
    """With no --model, ock-chat chats with the tiny model shipped in the package, and answers held-out questions (the
    recipe's test split: items it never saw in training) exactly, in skills it has learned well."""
    from openchatkit import inference
    from openchatkit.synthetic import skill_examples
    assert inference.default_model() is not None, 'the shipped tiny-chat model is missing from this install'
    test = skill_examples(900, 0, 'test')
    asked = [next(e for e in test if e['skill'] == s) for s in ('units', 'weekday', 'compare')]
    r = run('--no-sample', '--no-stream', stdin='\n/reset\n'.join(e['question'] for e in asked) + '\n/quit\n')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    replies = [p.strip() for p in r.stdout.split('>>> ')[1:] if p.strip()]
    eq(replies, [e['answer'] for e in asked])
