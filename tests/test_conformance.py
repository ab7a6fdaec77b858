"""ock-serve against the published specification, not against today's clients: every answer of a real server (chat
completions, streamed and not, text completions, responses and their events, models) is validated with `jsonschema`
against OpenAI's OpenAPI document (tests/conformance/), and the openai SDK's requests that OpenAI serves (a lone system
or developer message, a prefilled assistant turn) are served."""
import gzip, json, copy
from functools import lru_cache
from pathlib import Path
import httpx, pytest
from conftest import serving

SPEC = Path(__file__).parent/'conformance'/'openai-openapi.json.gz'

def _nullable(x):
    "OpenAPI 3.0's `nullable: true` (which the document still uses in places) as JSON Schema's `null`."
    if isinstance(x, list): return [_nullable(v) for v in x]
    if not isinstance(x, dict): return x
    x = {k: _nullable(v) for k, v in x.items()}
    if x.pop('nullable', False):
        if 'enum' in x: x['enum'] = [*x['enum'], None]
        t = x.get('type')
        if isinstance(t, str): x['type'] = [t, 'null']
        elif isinstance(t, list): x['type'] = [*t, 'null'] if 'null' not in t else t
        else: x = {'anyOf': [x, {'type': 'null'}]}
    return x

@lru_cache(None)
def components() -> dict: return _nullable(json.load(gzip.open(SPEC))['components'])

def errors(obj, schema: str) -> list[str]:
    "What in `obj` breaks the document's schema `schema` (one line each, with the path in `obj`)."
    from jsonschema import Draft202012Validator
    v = Draft202012Validator({'$ref': f'#/components/schemas/{schema}', 'components': components()})
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in v.iter_errors(obj)]

def check(obj, schema):
    errs = errors(obj, schema)
    assert not errs, f"{schema}:\n" + '\n'.join(errs[:10])

@lru_cache(None)
def event_schemas() -> dict:
    "Each Responses stream event's `type` → the schema of that event."
    out = {}
    for ref in components()['schemas']['ResponseStreamEvent']['anyOf']:
        name = ref['$ref'].rsplit('/', 1)[1]
        t = components()['schemas'][name].get('properties', {}).get('type', {})
        for v in t.get('enum', []): out[v] = name
    return out

def test_checker_catches_the_deviations_it_guards():
    "The checker itself: it rejects a chat message without `refusal` and a response without `completed_at`/`reasoning`."
    msg = {'id': 'c', 'object': 'chat.completion', 'created': 1, 'model': 'm',
           'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': 'hi'}, 'logprobs': None, 'finish_reason': 'stop'}]}
    assert any("'refusal' is a required property" in e for e in errors(msg, 'CreateChatCompletionResponse'))
    good = copy.deepcopy(msg)
    good['choices'][0]['message']['refusal'] = None
    assert errors(good, 'CreateChatCompletionResponse') == []
    assert errors({'id': 'r', 'object': 'response'}, 'Response')      # far from a response

@pytest.fixture(scope='module')
def server(tiny):
    with serving('--model', tiny, '--model-name', 'tiny-chat', '--threads', '1', log_dir=Path(tiny).parent) as url: yield url

def sse(r) -> list:
    return [json.loads(l[6:]) for l in r.iter_lines() if l.startswith('data: ') and l != 'data: [DONE]']

CHAT = {'model': 'tiny-chat', 'max_tokens': 6, 'temperature': 0, 'seed': 1,
        'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hello!'}]}

@pytest.mark.timeout(600)
def test_chat_completions_match_the_spec(server):
    url = server + '/v1/chat/completions'
    for extra in ({}, {'n': 2, 'logprobs': True, 'top_logprobs': 2}, {'stop': ['\n']}):
        r = httpx.post(url, json={**CHAT, **extra}, timeout=120)
        assert r.status_code == 200, r.text
        check(r.json(), 'CreateChatCompletionResponse')
        assert all(c['message']['refusal'] is None for c in r.json()['choices'])
    with httpx.stream('POST', url, json={**CHAT, 'stream': True, 'stream_options': {'include_usage': True}, 'logprobs': True},
                      timeout=120) as r:
        chunks = sse(r)
    assert len(chunks) >= 3
    for c in chunks: check(c, 'CreateChatCompletionStreamResponse')

@pytest.mark.timeout(600)
def test_completions_and_models_match_the_spec(server):
    # (not with echo: the first prompt token has no log-probability, null as OpenAI's own legacy server sends it and
    # lm-eval expects, which the document's schema, written for completions without echo, does not allow)
    for extra in ({}, {'logprobs': 2, 'n': 2}, {'prompt': ['The sky', 'A cat'], 'stop': ' '}):
        r = httpx.post(server + '/v1/completions', json={'model': 'tiny-chat', 'prompt': 'The sky', 'max_tokens': 4, **extra}, timeout=120)
        assert r.status_code == 200, r.text
        check(r.json(), 'CreateCompletionResponse')
    # (streamed text completions have no schema of their own: the document gives them this one, whose finish_reason,
    # required to be a string, is null in every chunk but the last in OpenAI's own stream)
    models = httpx.get(server + '/v1/models', timeout=30).json()
    check(models, 'ListModelsResponse')
    check(httpx.get(server + '/v1/models/tiny-chat', timeout=30).json(), 'Model')

# what the Open Responses specification's ResponseResource requires beyond OpenAI's document (its four text tests fail without)
OPEN_RESPONSES = ['completed_at', 'presence_penalty', 'frequency_penalty', 'top_logprobs', 'reasoning', 'max_tool_calls', 'background',
                  'service_tier', 'safety_identifier', 'prompt_cache_key', 'temperature', 'top_p']

@pytest.mark.timeout(600)
def test_responses_match_the_spec(server):
    body = {'model': 'tiny-chat', 'instructions': 'Be brief.', 'input': 'Hello!', 'max_output_tokens': 6}
    r = httpx.post(server + '/v1/responses', json=body, timeout=120).json()
    check(r, 'Response')
    assert [k for k in OPEN_RESPONSES if r.get(k, 'absent') == 'absent'] == []
    assert isinstance(r['temperature'], float) and isinstance(r['top_p'], float) and r['completed_at'] >= r['created_at']
    multi = {**body, 'input': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello.'},
                               {'role': 'user', 'content': [{'type': 'input_text', 'text': 'Bye'}]}]}
    check(httpx.post(server + '/v1/responses', json=multi, timeout=120).json(), 'Response')
    with httpx.stream('POST', server + '/v1/responses', json={**body, 'stream': True}, timeout=120) as s:
        events = sse(s)
    kinds = event_schemas()
    for e in events:
        assert e['type'] in kinds, e['type']
        check(e, kinds[e['type']])
        if 'response' in e: assert [k for k in OPEN_RESPONSES if k not in e['response']] == [], e['type']

@pytest.mark.timeout(600)
def test_any_last_role_is_served_through_the_sdk(server):
    "The openai SDK's own chat requests: a lone system or developer message, a prefilled assistant turn; the reply follows."
    from openai import OpenAI
    client = OpenAI(base_url=server + '/v1', api_key='none')
    for msgs in ([{'role': 'system', 'content': 'Say hello.'}], [{'role': 'developer', 'content': 'Say hello.'}],
                 [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}],
                 [{'role': 'user', 'content': 'Hi'}, {'role': 'system', 'content': 'Answer in French.'}]):
        c = client.chat.completions.create(model='tiny-chat', messages=msgs, max_tokens=4, temperature=0)
        assert c.choices[0].message.role == 'assistant' and c.choices[0].finish_reason in ('stop', 'length'), c
        assert c.usage.completion_tokens >= 1
        check(c.model_dump(mode='json', exclude_unset=True), 'CreateChatCompletionResponse')
        stream = client.chat.completions.create(model='tiny-chat', messages=msgs, max_tokens=4, temperature=0, stream=True)
        assert ''.join(ch.choices[0].delta.content or '' for ch in stream if ch.choices) == c.choices[0].message.content
