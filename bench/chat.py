"""Chat benchmark on one tiny model, in one run (ratios against baselines measured in the same process).

1. streaming tokens/s of `ChatModel.stream` ÷ tokens/s of a bare `model.generate` (same prompt, same number of
   greedy tokens; goal >= 0.97);
2. latency of turn 10 ÷ turn 1 of a conversation, with the KV cache kept across turns versus re-encoding the
   whole history every turn.

    python bench/chat.py [--hidden 128] [--layers 2] [--new 48] [--repeats 3]

Runs are interleaved and the best of `--repeats` is kept, so other load on the machine disturbs both sides alike.
"""
import os, time, argparse, tempfile, statistics
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--hidden', type=int, default=128)
    ap.add_argument('--layers', type=int, default=2)
    ap.add_argument('--new', type=int, default=48, help='new tokens per generation')
    ap.add_argument('--turns', type=int, default=10)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: leave as is)')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    from openchatkit.tiny import save_tiny_model
    from openchatkit.inference import ChatModel
    from openchatkit.conversation import Conversation
    d = save_tiny_model(tempfile.mkdtemp() + '/m', 'gpt_neox', hidden=a.hidden, layers=a.layers, heads=4, max_positions=4096)
    cm = ChatModel.load(d, device='cpu')
    cm.eos_ids = set()                                     # a random model may say end-of-text: force the full length
    m, tok = cm.model, cm.tokenizer
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = tok.pad_token_id
    print(f"model: gpt_neox hidden={a.hidden} layers={a.layers}, {sum(p.numel() for p in m.parameters())/1e6:.2f}M params, "
          f"torch threads={torch.get_num_threads()}")

    # 1. streaming vs bare generate -------------------------------------------------------------------------------
    conv = Conversation(now=0)
    conv.push_human_turn("Tell me a long story about a river that flows through a city, please, with many details.")
    prompt = conv.get_raw_prompt()
    ids = torch.tensor([tok.encode(prompt)])
    def bare():
        t = time.perf_counter()
        out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.new, do_sample=False)
        dt = time.perf_counter() - t
        assert out.shape[1] - ids.shape[1] == a.new
        return a.new / dt
    def streamed():
        t = time.perf_counter()
        n = 0
        for _ in cm.stream(prompt, max_new_tokens=a.new, do_sample=False, stop=(), use_cache=False): n += 1
        dt = time.perf_counter() - t
        assert cm.last.new_tokens == a.new, cm.last
        return a.new / dt
    bare()
    streamed()                                     # warm-up
    b, s = [], []
    for _ in range(a.repeats):
        b.append(bare())
        s.append(streamed())
    print(f"bare generate : best {max(b):7.1f} tok/s (median {statistics.median(b):.1f})")
    print(f"ChatModel.stream: best {max(s):7.1f} tok/s (median {statistics.median(s):.1f})")
    print(f"RATIO streaming/bare tok/s = {max(s)/max(b):.3f}   (goal >= 0.97; medians {statistics.median(s)/statistics.median(b):.3f})")

    # 2. turn 10 / turn 1 latency, cache kept vs re-encoded ---------------------------------------------------------
    question = ("Here is a fairly long question number {i}, which adds a good number of tokens to the history of "
                "this conversation so that re-encoding it every turn costs something: what comes after {i}?")
    def conversation(use_cache):
        cm.reset_cache()
        c = Conversation(now=0)
        lat = []
        for i in range(a.turns):
            c.push_human_turn(question.format(i=i))
            t = time.perf_counter()
            cm.chat(c, max_new_tokens=a.new // 2, do_sample=False, stop=(), use_cache=use_cache)
            lat.append(time.perf_counter() - t)
        return lat, cm.last.prompt_tokens
    conversation(True)                                      # warm-up
    kept, reenc = [], []
    for _ in range(a.repeats):
        kept.append(conversation(True)[0])
        reenc.append(conversation(False)[0])
    best = lambda runs, j: min(r[j] for r in runs)
    _, n_last = conversation(True)
    rk = best(kept, a.turns - 1) / best(kept, 0)
    rr = best(reenc, a.turns - 1) / best(reenc, 0)
    print(f"turn 1 / turn {a.turns} latency: cache kept {best(kept, 0)*1e3:.0f} / {best(kept, a.turns-1)*1e3:.0f} ms, "
          f"re-encoding {best(reenc, 0)*1e3:.0f} / {best(reenc, a.turns-1)*1e3:.0f} ms (prompt at turn {a.turns}: {n_last} tokens)")
    print(f"RATIO turn{a.turns}/turn1 latency: cache kept = {rk:.2f}, re-encoding history = {rr:.2f}")
    print(f"RATIO turn-{a.turns} latency, re-encoding / cache kept = {best(reenc, a.turns-1)/best(kept, a.turns-1):.2f}")

if __name__ == '__main__': main()
