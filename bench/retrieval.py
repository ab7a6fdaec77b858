"""Retrieval benchmark: approximate faiss indexes against exact search, and one grounded query against OpenChatKit's
neighbour re-encoding. Prints ratios measured in this one run (no absolute targets).

    python bench/retrieval.py --threads 1     # 1M x 384-d vectors (about 6 min on a quiet 2-core CPU)
    python bench/retrieval.py --n 100000      # quick look

Part 1 - recall@10 of IVF and HNSW against exact inner-product search (IndexFlatIP) on N random 384-d unit vectors,
and their query speed-up (exact time / approximate time, same queries, same threads). The vectors are random but
clustered (a mixture of gaussians around random centres, like sentence embeddings, which cluster by topic);
`--uniform` uses i.i.d. gaussian vectors instead, where nearest neighbours are barely nearer than anything else and
every approximate index struggles (reported for honesty, not as the target case).

Part 2 - latency of one grounded query (encode the query + search + window expansion w=5, threshold 0.5, as `ock-chat
--retrieval` does) divided by OpenChatKit's method (the same, but re-encoding the 2w+1 snippets around each hit on
every query). The encoder is contriever-msmarco's architecture (BERT-base, 768-d, mean pooling) with random weights,
made locally: the cost is the same as the real model's, which cannot be downloaded here. Snippets are ~3 sentences.
"""
import argparse, os, time, tempfile
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
import numpy as np, faiss

def data(n, d, nq, uniform, seed=0, n_centres=2000, spread=0.6):
    rng = np.random.default_rng(seed)
    def unit(x): return x / np.linalg.norm(x, axis=1, keepdims=True)
    def draw(m):
        if uniform: x = rng.standard_normal((m, d), dtype=np.float32)
        else:
            x = rng.standard_normal((m, d), dtype=np.float32) * np.float32(spread / np.sqrt(d))
            x += centres[rng.integers(0, n_centres, m)]
        return unit(x).astype('float32')
    centres = unit(rng.standard_normal((n_centres, d), dtype=np.float32))
    xb = np.empty((n, d), dtype='float32')
    for s in range(0, n, 200_000): xb[s:s + 200_000] = draw(min(200_000, n - s))
    return xb, draw(nq)

def timed(f, reps=1):
    best = float('inf')
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return out, best

def recall(I, G, k=10): return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, G)]))

def part1(args):
    from openchatkit.retrieval import build_faiss_index, set_search_params
    print(f"== part 1: {args.n:,} {'uniform' if args.uniform else 'clustered'} random {args.d}-d unit vectors, "
          f"{args.nq} queries, k=10, {faiss.omp_get_max_threads()} threads")
    t = time.perf_counter()
    xb, xq = data(args.n, args.d, args.nq, args.uniform, n_centres=args.centres, spread=args.spread)
    print(f"data {time.perf_counter() - t:.1f}s")
    flat = faiss.IndexFlatIP(args.d)
    flat.add(xb)
    (_, G), t_exact = timed(lambda: flat.search(xq, 10))
    q1 = xq[:10]
    _, t1_exact = timed(lambda: [flat.search(q1[i:i + 1], 10) for i in range(len(q1))])
    rows = [('exact (Flat)', '', 1.0, t_exact, t1_exact / len(q1), 0.0)]
    nlist = args.nlist or int(4 * np.sqrt(args.n) / 4)        # fewer lists than the library default: faster to train here
    print(f"exact search {1000 * t_exact / args.nq:.2f} ms/query", flush=True)
    t = time.perf_counter()
    ivf = build_faiss_index(xb, 'ivf', nlist=nlist, train_size=40 * nlist)
    t_ivf = time.perf_counter() - t
    for nprobe in args.nprobe:
        set_search_params(ivf, nprobe=nprobe)
        (_, I), ts = timed(lambda: ivf.search(xq, 10), 2)
        _, t1 = timed(lambda: [ivf.search(q1[i:i + 1], 10) for i in range(len(q1))])
        rows.append((f'IVF{nlist},Flat', f'nprobe={nprobe}', recall(I, G), ts, t1 / len(q1), t_ivf))
    print(f"IVF built in {t_ivf:.0f}s", flush=True)
    t = time.perf_counter()
    hnsw = build_faiss_index(xb, 'hnsw', hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    t_hnsw = time.perf_counter() - t
    for ef in args.ef_search:
        set_search_params(hnsw, ef_search=ef)
        (_, I), ts = timed(lambda: hnsw.search(xq, 10), 2)
        _, t1 = timed(lambda: [hnsw.search(q1[i:i + 1], 10) for i in range(len(q1))])
        rows.append((f'HNSW{args.hnsw_m},Flat', f'efSearch={ef}', recall(I, G), ts, t1 / len(q1), t_hnsw))
    print(f"{'index':18s} {'param':13s} {'recall@10':>9s} {'batch ms/q':>10s} {'speed-up':>8s} {'1-query ms':>10s} {'speed-up':>8s} {'build s':>7s}")
    for name, p, rec, ts, t1, tb in rows:
        print(f"{name:18s} {p:13s} {rec:9.3f} {1000 * ts / args.nq:10.3f} {t_exact / ts:7.1f}x {1000 * t1:10.3f} {t1_exact / len(q1) / t1:7.1f}x {tb:7.1f}")
    best = {}
    for name, p, rec, ts, t1, tb in rows[1:]:
        fam = name.split(',')[0].rstrip('0123456789')
        if rec >= 0.95 and t_exact / ts > best.get(fam, (0, 0, ''))[1]: best[fam] = (rec, t_exact / ts, p)
    for fam, (rec, sp, p) in best.items():
        print(f"RESULT {fam}: recall@10 {rec:.3f} at {sp:.1f}x the exact search's speed ({p})")
    for fam in ('IVF', 'HNSW'):
        if fam not in best: print(f"RESULT {fam}: no setting reached recall@10 0.95")
    del xb, flat, ivf, hnsw

def part2(args):
    import torch
    from openchatkit.retrieval import load_embedder, tiny_bert, build_faiss_index, Retriever, expand_by_reencoding
    torch.set_num_threads(faiss.omp_get_max_threads())
    print(f"\n== part 2: one grounded query, contriever-shaped encoder (BERT-base, random weights, mean pooling), {torch.get_num_threads()} threads")
    tmp = Path(tempfile.mkdtemp())
    emb = load_embedder(str(tiny_bert(tmp/'bert-base', hidden=768, layers=12, heads=12)), device='cpu')
    rng = np.random.default_rng(0)
    words = ("river town valley mountain company founded year capital people market bridge school music river "
             "history famous north south east west king queen war peace trade harbour island lake forest").split()
    sent = lambda: ' '.join(rng.choice(words, rng.integers(8, 18))).capitalize() + '.'
    n = args.snippets
    texts = [' '.join(sent() for _ in range(3)) for _ in range(n)]
    t = time.perf_counter()
    V = emb.encode(texts, batch_size=32)
    print(f"encoded {n} snippets for the index in {time.perf_counter() - t:.0f}s")
    index = build_faiss_index(V, 'flat')
    r_ours = Retriever(index, texts, [f'#{i}' for i in range(n)], emb, w=5, threshold=0.5)          # neighbours from the index
    queries = [sent() for _ in range(args.queries)]
    res = {}
    for k in (1, 3):
        def ours(): return [r_ours.search(q, k=k) for q in queries]
        def openchatkit():
            out = []
            for q in queries:
                hs = r_ours.search(q, k=k, expand=False)
                out.append([expand_by_reencoding(r_ours, h.id, 5, 0.5) for h in hs])
            return out
        r_enc = Retriever(index, texts, r_ours.sources, emb, w=5, threshold=0.5, neighbours='encode')
        def batched():
            r_enc._cache.clear()
            return [r_enc.search(q, k=k) for q in queries]
        ours()
        openchatkit()                           # warm up
        a, t_ours = timed(ours, 2)
        b, t_ock = timed(openchatkit, 2)
        c, t_bat = timed(batched, 2)
        assert [[h.text for h in hs] for hs in a] == b == [[h.text for h in hs] for hs in c], "expansions differ"
        res[k] = (t_ours, t_ock, t_bat)
        nq = len(queries)
        print(f"k={k}: ours {1000 * t_ours / nq:7.1f} ms/query | OpenChatKit (re-encode 2w+1 per hit) {1000 * t_ock / nq:7.1f} ms "
              f"| ours, neighbours encoded in one batch (index without exact vectors) {1000 * t_bat / nq:7.1f} ms")
        print(f"RESULT grounded query k={k}: ours / OpenChatKit = {t_ours / t_ock:.3f} (stored vectors), "
              f"{t_bat / t_ock:.3f} (one batched encode, no cache)")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=1_000_000)
    ap.add_argument('--d', type=int, default=384)
    ap.add_argument('--nq', type=int, default=300)
    ap.add_argument('--uniform', action='store_true')
    ap.add_argument('--nlist', type=int, default=None)
    ap.add_argument('--nprobe', type=int, nargs='+', default=[16, 32, 64, 128])
    ap.add_argument('--hnsw-m', type=int, default=16)
    ap.add_argument('--ef-construction', type=int, default=32)
    ap.add_argument('--ef-search', type=int, nargs='+', default=[64, 128, 256, 512])
    ap.add_argument('--snippets', type=int, default=400)
    ap.add_argument('--queries', type=int, default=5)
    ap.add_argument('--skip', choices=['1', '2'], default=None, help='skip part 1 or 2')
    ap.add_argument('--centres', type=int, default=10_000, help='clusters in the mixture')
    ap.add_argument('--spread', type=float, default=0.8, help='noise norm around a centre (centres have norm 1)')
    ap.add_argument('--threads', type=int, default=None, help='faiss/torch threads (default: all; 1 is steadier on a busy machine)')
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
        import torch
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.skip != '1': part1(args)
    if args.skip != '2': part2(args)
    print(f"total {time.perf_counter() - t0:.0f}s")
