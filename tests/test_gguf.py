"""GGUF export as a user runs it: `ock-convert … --gguf f16,q8_0 --verify` on the shipped model writes both files and a
Modelfile, and its check runs the files in a real llama.cpp runtime (llama-cpp-python) against the Hugging Face model; the
files hold the tokenizer, special tokens and chat template; a Llama export runs too; bad input is one line."""
import json, re, subprocess
import pytest
from conftest import CPU_ENV, BIN, assert_one_line_error

def convert(*args, timeout=900):
    return subprocess.run([str(BIN/'ock-convert'), *map(str, args)], capture_output=True, text=True, env=CPU_ENV, timeout=timeout)

@pytest.mark.timeout(1200)
def test_shipped_model_exports_and_runs_in_llama_cpp(tmp_path):
    r = convert('shipped', tmp_path, '--gguf', 'f16,q8_0', '--verify')
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    same, tie = re.search(r'tiny-chat-f16.gguf: llama.cpp tokens 64/64 the same, greedy replies (\d+)/64 the same(?: \((\d+) more)?',
                          lines[0]).groups()
    assert int(same) + int(tie or 0) == 64 and int(tie or 0) <= 2, lines[0]     # f16: the model's replies, but for rounding at a near-tie
    assert 'tiny-chat-q8_0.gguf: llama.cpp tokens 64/64 the same' in lines[1], lines[1]
    q8, model = map(int, re.search(r"exact match (\d+)/64 \(the model's (\d+)/64\)", lines[1]).groups())
    assert model - q8 <= 1, lines[1]                                    # within 2 points of 64
    import gguf
    from openchatkit.conversation import CHAT_TEMPLATE
    f = gguf.GGUFReader(tmp_path/'tiny-chat-f16.gguf')
    assert f.fields['tokenizer.chat_template'].contents() == CHAT_TEMPLATE
    toks = f.fields['tokenizer.ggml.tokens'].contents()
    assert toks[0] == '<|endoftext|>' and toks[1024:1026] == ['<human>:', '<bot>:']
    assert f.fields['tokenizer.ggml.eos_token_id'].contents() == 0
    assert (tmp_path/'tiny-chat-q8_0.gguf').stat().st_size < 0.6 * (tmp_path/'tiny-chat-f16.gguf').stat().st_size
    mf = (tmp_path/'Modelfile').read_text()
    assert mf.startswith('FROM ./tiny-chat-f16.gguf\n') and 'PARAMETER stop "<human>:"' in mf and 'PARAMETER temperature 0.6' in mf
    assert not list(tmp_path.glob('.*tmp'))                              # written atomically: no temporaries left

@pytest.mark.timeout(900)
def test_llama_family_exports_and_matches(tmp_path):
    "A Llama with grouped-query attention (q/k un-rotated for llama.cpp's rope): its greedy replies in llama.cpp are the model's."
    from openchatkit.tiny import save_tiny_model
    from openchatkit.convert import export_gguf, verify_gguf
    d = save_tiny_model(tmp_path/'llama', 'llama')
    assert (json.loads((d/'config.json').read_text())['num_key_value_heads']
            < json.loads((d/'config.json').read_text())['num_attention_heads'])
    f, = export_gguf(d, tmp_path/'out', ('f16',))
    prompts = [f"<human>: What is {a} plus {b}?\n<bot>:" for a, b in [(1, 2), (30, 12), (7, 7), (58, 43)]]
    r = verify_gguf(f, d, prompts, max_new_tokens=12)
    assert r == {**r, 'same_tokens': 4, 'same_reply': 4}, r

def test_bad_gguf_input_is_one_line(tmp_path):
    assert_one_line_error(convert('shipped', tmp_path, '--gguf', 'q4_k'), "--gguf 'q4_k'", 'f16')
    assert_one_line_error(convert(tmp_path/'nope', tmp_path/'o', '--gguf', 'f16'), 'nope')
    (tmp_path/'bert').mkdir()
    (tmp_path/'bert'/'config.json').write_text(json.dumps({'model_type': 'bert', 'architectures': ['BertModel']}))
    assert_one_line_error(convert(tmp_path/'bert', tmp_path/'o', '--gguf', 'f16'), 'GGUF export knows gpt_neox, llama models, not bert')
    assert not (tmp_path/'o').exists() or not list((tmp_path/'o').iterdir())          # nothing half-written
