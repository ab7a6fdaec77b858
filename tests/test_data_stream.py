"""PackedStream properties that need bigger inputs than a notebook example: memory flat in the input size."""
import os, json, random, tracemalloc
import pytest

from openchatkit.data import PackedStream, write_jsonl
from openchatkit.tiny import train_tokenizer

pytestmark = pytest.mark.timeout(300)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
WORDS = 'alpha beta gamma delta river stone cloud seven music window garden answer question'.split()


def _doc(rng, i, q=20, a=60):
    return f"<human>: {' '.join(rng.choices(WORDS, k=q))} {i}?\n<bot>: {' '.join(rng.choices(WORDS, k=a))}."


def _peak(path, tok):
    "Peak Python heap while streaming `path` to its end (tokenizer internals are native and not counted)."
    s = PackedStream(str(path), tok, 256, cycle=False, shuffle_buffer=500)
    tracemalloc.start()
    n = sum(1 for _ in s)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, n


def test_memory_flat_in_input_size(tmp_path):
    rng = random.Random(0)
    tok = train_tokenizer([_doc(rng, i) for i in range(300)], vocab_size=300)
    small = write_jsonl(tmp_path/'small.jsonl', [_doc(rng, i) for i in range(1500)])
    big = write_jsonl(tmp_path/'big.jsonl.gz', [_doc(rng, i) for i in range(7500)])   # 5x the records
    p_small, n_small = _peak(small, tok)
    p_big, n_big = _peak(big, tok)
    assert n_big > 4 * n_small
    # holding the data would grow the heap ~5x; a stream holds one shuffle chunk of texts and one block
    assert p_big < 1.5 * p_small + 256 * 1024, (p_small, p_big)


@pytest.mark.parametrize('dp_rank', [0, 1])
def test_resume_exact_over_compressed_multi_file_directory(tmp_path, dp_rank):
    "Resume at many points of a directory of .gz/.zst/.jsonl files (file order reshuffled each epoch), rank 1 of 2."
    rng = random.Random(1)
    tok = train_tokenizer([_doc(rng, i) for i in range(200)], vocab_size=300)
    d = tmp_path/'data'
    d.mkdir()
    for k, ext in enumerate(['jsonl.gz', 'jsonl.zst', 'jsonl', 'jsonl.gz']):
        write_jsonl(d/f'part{k}.{ext}', [_doc(rng, 1000 * k + i, 4, 8) for i in range(40 + 10 * k)])
    mk = lambda: PackedStream(f'{d}:2,{d}/part1.jsonl.zst', tok, 48, seed=5, shuffle_buffer=16, loss_on='bot',
                              dp_rank=dp_rank, dp_size=2)
    ref = [b for _, b in zip(range(600), mk())]
    for n in (7, 101, 350, 599):
        s = mk()
        it = iter(s)
        for _ in range(n): next(it)
        state = json.loads(json.dumps(s.state_dict()))
        s2 = mk()
        s2.load_state_dict(state)
        got = [b for _, b in zip(range(600 - n), s2)]
        assert all((a['input_ids'] == b['input_ids']).all() and (a['labels'] == b['labels']).all()
                   for a, b in zip(ref[n:], got)), n
    assert state['sources'][0]['epoch'] >= 2 and state['sources'][1]['epoch'] >= 2


def test_dataloader_workers_refused(tmp_path):
    "DataLoader workers would each repeat the stream and keep its position out of reach: a clear error instead."
    import torch
    rng = random.Random(2)
    tok = train_tokenizer([_doc(rng, i) for i in range(50)], vocab_size=300)
    p = write_jsonl(tmp_path/'a.jsonl', [_doc(rng, i) for i in range(50)])
    s = PackedStream(str(p), tok, 32)
    assert len(next(iter(torch.utils.data.DataLoader(s, batch_size=2, num_workers=0)))['input_ids']) == 2
    with pytest.raises(Exception, match='PackedStream keeps its position in the process that iterates it'):
        next(iter(torch.utils.data.DataLoader(s, batch_size=2, num_workers=1)))
