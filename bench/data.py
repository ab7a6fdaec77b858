"""Data benchmark: the packing pipeline against a naive per-line loop, and memory on a large input, in one run.

1. tokens/s of `PackedStream` (batched Rust tokenization + packing) ÷ tokens/s of a naive per-line loop
   (`json.loads`, `tokenizer(text)`, a growing list cut into blocks - what OpenChatKit's loader did per record)
   on the same generated input (goal >= 5x); the two are interleaved and the best of `--repeats` kept, so other
   load on the machine disturbs both alike. Also: the pipeline with the tokenizer's thread pool on ÷ off
   (whether parallel tokenization pays on this machine).
2. peak memory (RSS, sampled, and the kernel's high-water mark) while `PackedStream` streams a generated
   ~1 GB `.jsonl` to its end (goal: flat in the input size, well under 1 GB), with RSS at each quarter.

    python bench/data.py                      # ~1 GB input: some minutes on 2 cores
    python bench/data.py --size-mb 100        # quick look

The tokenizer is a byte-level BPE trained here (vocab 4096; no hub access), the documents OIG-like chats.
"""
import os, sys, json, time, random, argparse, tempfile, threading, resource
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from pathlib import Path
import psutil, torch

SYLL = "ka lo mi ne ru sa te vo pi da gu re mo li na ta se ko bu fi ra no he ma ti lu ve zo ga pe".split()
_r = random.Random(0)
WORDS = ("the of and to in is was for on that with as by at from his her an were which are this be also had has it "
         "not or have one their they first new after two who other been time during its all would into can there").split() \
        + sorted({''.join(_r.choice(SYLL) for _ in range(_r.randint(1, 4))) for _ in range(6000)})
CUM = list(__import__('itertools').accumulate(1 / (k + 1) for k in range(len(WORDS))))   # Zipf-like frequencies

def chat(rng: random.Random, i: int) -> str:
    "An OIG-like conversation of 1-3 turns over a Zipf-distributed vocabulary of a few thousand words."
    turns = []
    for _ in range(rng.randint(1, 3)):
        q = ' '.join(rng.choices(WORDS, cum_weights=CUM, k=rng.randint(5, 25)))
        a = ' '.join(rng.choices(WORDS, cum_weights=CUM, k=rng.randint(10, 120)))
        turns.append(f"<human>: {q.capitalize()} {i}?\n<bot>: {a.capitalize()}, {rng.randint(0, 10**6)}.")
    return '\n'.join(turns)

def generate(path: Path, size_mb: float, seed: int = 0) -> Path:
    "Write OIG-like JSONL until it reaches size_mb (distinct records, a few thousand templates recombined)."
    rng, target, n = random.Random(seed), int(size_mb * 2**20), 0
    pool = [chat(rng, i) for i in range(5000)]
    with open(path, 'w') as f:
        while n < target:
            lines = ''.join(json.dumps({'text': f"{pool[rng.randrange(5000)]}\n<human>: And {k}?\n<bot>: {k}.",
                                        'metadata': {'source': 'bench'}}) + '\n' for k in range(n, n + 2000))
            f.write(lines)
            n += len(lines)
    return path

def naive(path, tok, seq_length):
    "Per record: parse, tokenize alone, append to a list, cut full blocks as tensors."
    eos, buf, tokens, blocks = tok.eos_token_id, [], 0, 0
    with open(path) as f:
        for line in f:
            ids = tok(json.loads(line)['text'])['input_ids'] + [eos]
            buf.extend(ids)
            tokens += len(ids)
            while len(buf) >= seq_length:
                torch.tensor(buf[:seq_length], dtype=torch.long)
                buf = buf[seq_length:]
                blocks += 1
    return tokens, blocks

def pipeline(path, tok, seq_length, **kw):
    from openchatkit.data import PackedStream
    s = PackedStream(str(path), tok, seq_length, cycle=False, **kw)
    blocks = sum(1 for _ in s)
    return blocks * seq_length, blocks

def timed(f, *a, **kw):
    t = time.perf_counter()
    tokens, blocks = f(*a, **kw)
    return tokens / (time.perf_counter() - t), tokens, blocks

def rss(): return psutil.Process().memory_info().rss

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size-mb', type=float, default=1024, help='size of the large input for the memory run')
    ap.add_argument('--compare-mb', type=float, default=8, help='size of the input for the speed comparison')
    ap.add_argument('--seq-length', type=int, default=2048)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--dir', default=None, help='where to write the generated inputs (default: a temp dir)')
    a = ap.parse_args()
    from loguru import logger
    logger.remove()
    logger.add(sys.stderr, level='WARNING')
    from openchatkit.tiny import train_tokenizer
    d = Path(a.dir or tempfile.mkdtemp(prefix='ock-bench-data-'))
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    tok = train_tokenizer([chat(rng, i) for i in range(3000)], vocab_size=4096)
    print(f"tokenizer: byte-level BPE, vocab {len(tok)}; seq_length {a.seq_length}; {os.cpu_count()} CPUs")

    small = generate(d/'compare.jsonl', a.compare_mb)
    print(f"\n1. speed on {small.stat().st_size / 2**20:.1f} MiB of JSONL (best of {a.repeats}, interleaved)")
    best = {'naive': 0, 'pipeline': 0, 'pipeline, 1 thread': 0, 'tokenizer alone': 0}
    texts = [json.loads(l)['text'] for l in open(small)]
    def alone():                                       # the Rust tokenizer on pre-parsed texts: the ceiling
        return sum(len(e.ids) + 1 for e in tok.backend_tokenizer.encode_batch_fast(texts)), 0
    for _ in range(a.repeats):
        for name in best:
            if name == 'naive': r = timed(naive, small, tok, a.seq_length)
            elif name == 'tokenizer alone':
                os.environ['TOKENIZERS_PARALLELISM'] = 'true'
                r = timed(alone)
            else:
                os.environ['TOKENIZERS_PARALLELISM'] = 'false' if '1 thread' in name else 'true'
                r = timed(pipeline, small, tok, a.seq_length, shuffle=False)
            best[name] = max(best[name], r[0])
    os.environ['TOKENIZERS_PARALLELISM'] = 'true'
    for k, v in best.items(): print(f"   {k:<20} {v / 1e6:8.3f} M tokens/s")
    print(f"   pipeline / naive per-line loop: {best['pipeline'] / best['naive']:.1f}x   (goal >= 5x)")
    print(f"   tokenizer threads on / off:     {best['pipeline'] / best['pipeline, 1 thread']:.2f}x")
    print(f"   pipeline / tokenizer alone:     {best['pipeline'] / best['tokenizer alone']:.2f}   (1.0: reading, "
          f"parsing and packing cost nothing beside tokenization)")

    big = generate(d/'big.jsonl', a.size_mb, seed=2)
    size = big.stat().st_size
    print(f"\n2. memory streaming {size / 2**30:.2f} GiB of JSONL through PackedStream (seq_length {a.seq_length}, "
          f"shuffle buffer 10,000 records)", flush=True)
    from openchatkit.data import PackedStream
    s = PackedStream(str(big), tok, a.seq_length, cycle=False)
    base, peak, stop = rss(), [rss()], False
    def sample():
        while not stop:
            peak[0] = max(peak[0], rss())
            time.sleep(0.2)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t, blocks, quarter, marks = time.perf_counter(), 0, 1, []
    it = iter(s)
    for _ in it:
        blocks += 1
        if blocks % 64 == 0:
            pos = s.state_dict()['sources'][0]['pos'][1]
            if pos >= quarter * size / 8:
                marks.append((quarter, rss()))
                quarter += 1
                print(f"   {quarter - 1}/8 of the input read after {time.perf_counter() - t:.0f} s: RSS {marks[-1][1] / 2**20:,.0f} MiB, "
                      f"peak {peak[0] / 2**20:,.0f} MiB", flush=True)
    stop = True
    th.join()
    dt = time.perf_counter() - t
    marks.append((8, rss()))
    print(f"   {blocks:,} blocks = {blocks * a.seq_length / 1e6:,.1f} M tokens in {dt:.0f} s "
          f"({blocks * a.seq_length / dt / 1e6:.2f} M tokens/s)")
    print(f"   RSS before: {base / 2**20:,.0f} MiB; at the end: {marks[-1][1] / 2**20:,.0f} MiB")
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"   peak RSS while streaming: {peak[0] / 2**20:,.0f} MiB (+{(peak[0] - base) / 2**20:,.0f} MiB over the "
          f"process before it; input {size / 2**20:,.0f} MiB); high-water mark of the process {hwm / 2**20:,.0f} MiB")
    print(f"   peak growth / input size: {(peak[0] - base) / size:.3f}   (goal: flat, well under 1 GB)")
    if not a.dir:
        for p in (small, big): p.unlink()

if __name__ == '__main__': main()
