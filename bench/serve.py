"""Throughput of `ock-serve` under concurrency: total generated tokens/s with 8 concurrent clients ÷ with one client.

    python bench/serve.py [--model DIR] [--clients 8] [--requests 4] [--max-tokens 64] [--threads 1]

Starts `ock-serve` on a free 127.0.0.1 port (default model: a tiny gpt_neox made here), then runs, in this one
script, the baseline (one client, requests one after another) and the concurrent run (N clients at once, each
sending the same number of requests). Prints tokens/s of both and the ratio (goal: >= 3x on the tiny model)."""
import os, sys, time, asyncio, argparse, tempfile, subprocess
from pathlib import Path
import httpx
from openchatkit.core import free_port

async def client(c, url, model, i, requests, max_tokens):
    toks = 0
    for j in range(requests):
        r = await c.post(url + '/v1/chat/completions', json={
            'model': model, 'max_tokens': max_tokens, 'temperature': 0.8, 'seed': 1000 * i + j, 'ignore_eos': True,
            'messages': [{'role': 'user', 'content': f'Client {i} asks question number {j}: tell me a story.'}]})
        r.raise_for_status()
        toks += r.json()['usage']['completion_tokens']
    return toks

async def run(url, model, clients, requests, max_tokens):
    async with httpx.AsyncClient(timeout=600) as c:
        t0 = time.perf_counter()
        toks = await asyncio.gather(*[client(c, url, model, i, requests, max_tokens) for i in range(clients)])
        dt = time.perf_counter() - t0
    return sum(toks), dt

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model')
    ap.add_argument('--clients', type=int, default=8)
    ap.add_argument('--requests', type=int, default=4)
    ap.add_argument('--max-tokens', type=int, default=64)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    env.pop('OCK_API_KEY', None)
    model = a.model
    if model is None:
        from openchatkit.tiny import save_tiny_model
        model = str(save_tiny_model(Path(tempfile.mkdtemp())/'tiny', 'gpt_neox'))
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    p = subprocess.Popen([str(Path(sys.executable).parent/'ock-serve'), '--model', model, '--port', str(port),
                          '--model-name', 'bench', '--log-level', 'warning', '--threads', str(a.threads),
                          '--max-batch', str(max(16, a.clients))], env=env)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + '/health', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            if p.poll() is not None: sys.exit(f"ock-serve exited with {p.returncode}")
            time.sleep(0.3)
        asyncio.run(run(url, 'bench', 2, 1, 8))                      # warm-up
        t1, d1 = asyncio.run(run(url, 'bench', 1, a.requests, a.max_tokens))
        tn, dn = asyncio.run(run(url, 'bench', a.clients, a.requests, a.max_tokens))
        stats = httpx.get(url + '/health').json()['stats']
    finally:
        p.send_signal(2)
        p.wait(30)
    r1, rn = t1 / d1, tn / dn
    print(f"1 client : {t1} tokens in {d1:.2f}s = {r1:.1f} tok/s")
    print(f"{a.clients} clients: {tn} tokens in {dn:.2f}s = {rn:.1f} tok/s (largest batch {stats['max_active']})")
    print(f"ratio {a.clients} clients / 1 client: {rn / r1:.2f}x (goal >= 3x)")

if __name__ == '__main__': main()
