"""Chat records in (messages, ShareGPT, Alpaca beside text), bad records, and one token sequence for training and
every client: the training stream, `ChatModel.chat` (ock-chat), ock-serve's `chat_prompt` and `apply_chat_template`,
for an OpenChatKit-format tiny model and a tiny ChatML-template model."""
import os, sys, json, shutil, subprocess, datetime as dt
from pathlib import Path
import pytest
from openchatkit.core import OCKError
from openchatkit.data import PackedStream, write_jsonl, data_stats
from openchatkit.formats import check_chat_format, save_tiny_template_model, ChatTemplateError, CHATML_TEMPLATE
from openchatkit.tiny import save_tiny_model

SCRIPT = shutil.which('ock-prepare-data') or str(Path(sys.executable).parent/'ock-prepare-data')
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'DS_ACCELERATOR': 'cpu'}
NOW = dt.datetime(2024, 5, 17, 9, 30, tzinfo=dt.timezone.utc)
CHAT = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 2 plus 2?'},
        {'role': 'assistant', 'content': 'It is 4.'}, {'role': 'user', 'content': 'And 3 plus 3?'},
        {'role': 'assistant', 'content': 'It is 6.'}]

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp('models')
    return {'ock': save_tiny_model(d/'ock', vocab_size=300), 'chatml': save_tiny_template_model(d/'chatml', vocab_size=300)}

def tok(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)

def trained_pieces(stream, t):
    "The decoded runs of trained tokens of every block, in order."
    out = []
    for b in stream:
        run = []
        for x, y in zip(b['input_ids'].tolist(), b['labels'].tolist()):
            if y != -100: run.append(x)
            elif run:
                out.append(t.decode(run))
                run = []
        if run: out.append(t.decode(run))
    return out

def write_formats(d):
    "The same two-turn chat as messages, ShareGPT (.gz) and Alpaca (.zst, one turn)."
    sg = [{'from': {'system': 'system', 'user': 'human', 'assistant': 'gpt'}[m['role']], 'value': m['content']} for m in CHAT]
    return (write_jsonl(d/'m.jsonl', [{'messages': CHAT}]), write_jsonl(d/'s.jsonl.gz', [{'conversations': sg}]),
            write_jsonl(d/'a.jsonl.zst', [{'instruction': 'What is 2 plus 2?', 'output': 'It is 4.'}]))

@pytest.mark.parametrize('kind', ['ock', 'chatml'])
def test_formats_train_only_the_assistant_turns(models, tmp_path, kind):
    t = tok(models[kind])
    m, s, a = write_formats(tmp_path)
    ends = {'ock': ('\n<human>:', '\n<|endoftext|>'), 'chatml': ('<|im_end|>\n', '<|im_end|>\n')}[kind]
    want = ['It is 4.' + ends[0], 'It is 6.' + ends[1]]                   # (the <bot>: token owns the space after it)
    for f, w in ((m, want), (s, want), (a, [want[0][:len(want[0]) - len(ends[0])] + ends[1]])):
        ps = PackedStream(str(f), t, 512, shuffle=False, cycle=False, drop_last=False)
        got = [p.replace('<human>: ', '<human>:') for p in trained_pieces(ps, t)]
        assert got == [x.replace('<human>: ', '<human>:') for x in w], (f, got)
    # a mixture with the format named for one source (its records have no detectable keys of their own)
    write_jsonl(tmp_path/'named.jsonl', [{'conversations': [{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo.'}],
                                          'messages': 1}])
    mix = [{'path': str(tmp_path/'named.jsonl'), 'format': 'sharegpt'}, {'path': str(m)}, str(tmp_path/'t.jsonl')]
    write_jsonl(tmp_path/'t.jsonl', ['<human>: Hi\n<bot>: Hello.'])
    ps = PackedStream(mix, t, 512, shuffle=False, cycle=False, drop_last=False, loss_on='bot')
    assert sum('Yo.' in p for p in trained_pieces(ps, t)) == 1 and ps.report.n_bad == 0, ps.report

def test_bad_records_counted_with_file_and_line(models, tmp_path):
    t = tok(models['ock'])
    good = {'messages': CHAT[1:3]}
    recs = [good, {'messages': [{'role': 'wizard', 'content': 'x'}, {'role': 'assistant', 'content': 'y'}]}, good,
            {'messages': [{'role': 'user', 'content': ''}, {'role': 'assistant', 'content': 'y'}]},
            {'messages': [{'role': 'user', 'content': 3}, {'role': 'assistant', 'content': 'y'}]},
            {'messages': [{'role': 'user', 'content': 'only a question'}]}]
    f = write_jsonl(tmp_path/'bad.jsonl', recs)
    txt = write_jsonl(tmp_path/'txt.jsonl', ['<human>: Hi\n<bot>: Hello.', 'no reply here at all'])
    ps = PackedStream(f'{f},{txt}', t, 64, shuffle=False, cycle=False, drop_last=False, loss_on='bot')
    list(ps)
    r, rt = ps.report[str(f)], ps.report[str(txt)]
    assert r.records == 2 and dict(r.bad) == {'unknown role': 1, 'empty content': 1, 'content is not a string': 1,
                                              'no assistant turn': 1}, r
    assert [e.split(': ')[0] for e in r.examples] == [f'{f}:2', f'{f}:4', f'{f}:5'], r.examples
    assert rt.records == 1 and dict(rt.bad) == {'mask trains nothing': 1} and rt.examples[0].startswith(f'{txt}:2: '), rt
    st = data_stats(str(f), t, progress=False)
    assert st['files'][0]['bad'] == 4 and st['files'][0]['reasons']['no assistant turn'] == 1
    with pytest.raises(OCKError, match=rf'{f}:2: unknown role .*strict'): list(PackedStream(str(f), t, 64, strict=True, cycle=False))
    p = subprocess.run([SCRIPT, '--stats', str(f), '--strict'], capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 2 and f'{f}:2: unknown role' in p.stderr and 'Traceback' not in p.stderr, p.stderr

def test_stats_per_format_and_trained_share(models, tmp_path):
    m, s, a = write_formats(tmp_path)
    write_jsonl(tmp_path/'t.jsonl', ['<human>: Hi\n<bot>: Hello.'] * 3)
    p = subprocess.run([SCRIPT, '--stats', f"{m},{s},{a},{tmp_path/'t.jsonl'}", '--tokenizer', str(models['chatml'])],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    assert 'records per format: messages 1, sharegpt 1, alpaca 1, text 3' in p.stdout, p.stdout
    st = data_stats(f'{m},{s},{a}', tok(models['chatml']), progress=False)
    t = tok(models['chatml'])
    want = sum(len(t.encode(x)) for x in ('It is 4.<|im_end|>\n', 'It is 6.<|im_end|>\n')) * 2 + len(t.encode('It is 4.<|im_end|>\n'))
    assert st['total']['trained'] == want and 0 < st['total']['trained'] < st['total']['tokens'], st['total']
    assert f"trained ({want / st['total']['tokens']:.1%})" in format_stats_text(st)

def format_stats_text(st):
    from openchatkit.data import format_stats
    return format_stats(st)

def test_a_template_that_cannot_mark_the_replies_is_one_error(models, tmp_path):
    t = tok(models['chatml'])
    t.chat_template = "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    f = write_jsonl(tmp_path/'m.jsonl', [{'messages': CHAT}] * 3)
    with pytest.raises(ChatTemplateError, match='cannot mark assistant turn 1'): PackedStream(str(f), t, 64, chat_format='template')
    ps = PackedStream(str(f), t, 64)                                    # auto: at the first block, before any step
    with pytest.raises(ChatTemplateError, match='cannot mark assistant turn 1'): next(iter(ps))

def served_prompt_ids(path, msgs):
    "ock-serve's prompt token ids for `msgs`: `Service.chat_prompt` of a real Service, as a request with a seed sees it."
    from openchatkit.inference import ChatModel
    from openchatkit.engine import Engine
    from openchatkit.server import Service
    cm = ChatModel.load(str(path), device='cpu')
    svc = Service(Engine(cm), 'm')
    opts = {'gen': {'max_new_tokens': 8, 'seed': None}, 'given_max': True}
    from unittest import mock
    with mock.patch('openchatkit.conversation.make_preamble', side_effect=lambda now=None, seed=None: __import__(
            'openchatkit.conversation', fromlist=['x']).PRE_PROMPT.format('2024-05-17', '09:30:00 AM UTC')):
        return cm.encode(svc.chat_prompt(msgs, opts))

@pytest.mark.parametrize('kind', ['ock', 'chatml'])
def test_one_conversation_one_token_sequence(models, kind):
    from openchatkit.inference import ChatModel
    from openchatkit.conversation import Conversation
    from openchatkit.formats import render_chat, encode_chat
    t = tok(models[kind])
    r = check_chat_format(t, now=NOW)
    assert r['ok'] and r['turns'] == 8 and r['chat_format'] == {'ock': 'ock', 'chatml': 'template'}[kind], r
    # the real clients, through their own objects: ChatModel.chat (as ock-chat runs it) and the server's Service
    cm = ChatModel.load(str(models[kind]), device='cpu')
    seen = []
    real = cm.prompt_ids
    cm.prompt_ids = lambda p, n: (seen.append(list(cm.encode(p) if isinstance(p, str) else p)), real(p, n))[1]
    doc = render_chat(CHAT, t, now=NOW)
    ids, _ = encode_chat(t, doc)
    conv = Conversation(now=NOW, system='Be brief.')
    conv.push_human_turn('What is 2 plus 2?')
    conv.push_bot_turn('It is 4.')
    conv.push_human_turn('And 3 plus 3?')
    cm.chat(conv, max_new_tokens=1)      # as ock-chat and the widget call it: by default a template model is prompted with its template
    start = len(t.encode(doc.text[:doc.spans[1][0]]))
    assert seen[-1] == ids[:start], (t.decode(seen[-1]), t.decode(ids[:start]))
    assert served_prompt_ids(models[kind], CHAT[:4]) == ids[:start]
    from openchatkit.bot import ChatShell
    from openchatkit.widget import ChatWidget
    assert ChatShell(cm).chat_template is ChatWidget(cm).chat_template is True     # the front ends' default, auto: the template it has
    assert ChatShell(cm, chat_template='off').chat_template is False
    if kind == 'chatml':     # the reply ends where the template ends a turn: ChatModel (shell, widget, server, eval) stops there
        assert t.convert_tokens_to_ids('<|im_end|>') in cm.eos_ids, cm.eos_ids

@pytest.mark.parametrize('kind', ['ock', 'chatml'])
def test_check_template_command(models, tmp_path, kind):
    p = subprocess.run([SCRIPT, '--check-template', str(models[kind])], capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0 and 'give the same tokens' in p.stdout, (p.stdout, p.stderr)
    bad = shutil.copytree(models[kind], tmp_path/'odd')
    cfg = json.loads((bad/'tokenizer_config.json').read_text())
    tpl = CHATML_TEMPLATE.replace("{{ '<|im_start|>assistant\\n' }}",
                                  "{{ '<|im_start|>assistant\\n' }}{{ '' if messages | length > 2 else ' ' }}")
    cfg['chat_template'] = tpl
    (bad/'tokenizer_config.json').write_text(json.dumps(cfg))
    for f in bad.glob('chat_template.*'): f.write_text(tpl if f.suffix == '.jinja' else json.dumps({'chat_template': tpl}))
    p = subprocess.run([SCRIPT, '--check-template', str(bad)], capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 2 and 'cannot mark assistant turn' in p.stderr and 'Traceback' not in p.stderr, (p.stdout, p.stderr)
