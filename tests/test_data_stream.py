"""PackedStream properties that need bigger inputs than a notebook example: memory flat in the input size."""
import os, json, random, tracemalloc
import pytest

from openchatkit.data import PackedStream, write_jsonl
from openchatkit.tiny import train_tokenizer

pytestmark = pytest.mark.timeout(300)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
WORDS = 'alpha beta gamma delta river stone cloud seven music window garden answer question'.split()


def _doc(rng, i):
    return f"<human>: {' '.join(rng.choices(WORDS, k=20))} {i}?\n<bot>: {' '.join(rng.choices(WORDS, k=60))}."


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
