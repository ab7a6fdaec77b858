"""Training throughput on this machine, in one run: the tiny-chat recipe model (GPT-NeoX hidden 256, 7 layers,
BPE-1024, seq 128, 64 sequences per step, bot-only loss, fp32 or --precision amp-bf16) trained by

  (a) a plain single-process PyTorch loop (openchatkit.trainer.reference_train) with all cores, and with 1 thread;
  (b) ock-train's DeepSpeed pipeline engine, pp=2 on 2 processes (1 thread each, gloo).

Prints tokens/s of (b) / (a), and the pipeline efficiency = tok/s(pp=2) / (2 x tok/s(1 thread)) against the
ideal m/(m+p-1) of a 1F1B schedule with m micro-batches and p stages.

    python bench/train.py [--steps 8] [--micro-batches 8] [--precision fp32|amp-bf16]

With --packing: the cost of document-masked packing (`mask_documents: true`: positions from 0 in each packed chat,
attention within it only) against OpenChatKit's unmasked packing, the same model and data, at seq 256 and 2048
(blocks of ~10 and ~80 chats), runs interleaved: prints tok/s of each and the ratio masked / unmasked.

    python bench/train.py --packing [--steps 6]
"""
import os, time, argparse, tempfile, statistics
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=8)
    ap.add_argument('--micro-batches', type=int, default=8)
    ap.add_argument('--hidden', type=int, default=256)
    ap.add_argument('--layers', type=int, default=7)
    ap.add_argument('--precision', default='fp32', help="fp32 or amp-bf16 (bf16 autocast: fast only on CPUs with native bf16)")
    ap.add_argument('--packing', action='store_true', help="masked vs unmasked packing at seq 256 and 2048")
    a = ap.parse_args()
    if a.packing: return packing(a)
    from openchatkit.tiny import save_tiny_model
    from openchatkit.data import write_jsonl
    from openchatkit.config import load_train_config
    from openchatkit.checkpoint import read_metrics
    from openchatkit.trainer import reference_train
    from openchatkit.train import launch_training
    tmp = Path(tempfile.mkdtemp(prefix='ock-bench-train-'))
    texts = [f"<human>: What is {x} plus {y}?\n<bot>: {x} plus {y} is {x+y}." for x in range(10, 100) for y in range(10, 60, 3)]
    write_jsonl(tmp/'train.jsonl', [{'text': t} for t in texts])
    model = save_tiny_model(tmp/'model', 'gpt_neox', texts=texts, vocab_size=1024, hidden=a.hidden, layers=a.layers, heads=4)
    m = a.micro_batches
    base = dict(model=str(model), data=str(tmp/'train.jsonl'), seq_length=128, micro_batch_size=64 // m,
                gradient_accumulation_steps=m, total_steps=a.steps, lr=1.5e-3, warmup_steps=2, lr_schedule='cosine',
                precision=a.precision, loss_on='bot', checkpoint_every=0, progress=False, log_backend='none')
    tokens_per_step = 64 * 128

    def plain(threads):
        torch.set_num_threads(threads)
        cfg = load_train_config(base, [f'output_dir={tmp}/ref'])
        reference_train(cfg, steps=1)                      # warm-up (allocations, first-call costs)
        t = time.perf_counter()
        reference_train(cfg, steps=a.steps - 2)
        dt = time.perf_counter() - t
        return (a.steps - 2) * tokens_per_step / dt

    ncores = os.cpu_count() or 1
    plain_all = plain(ncores)
    plain_1 = plain(1)
    launch_training({**base, 'pipeline_parallel': 2, 'output_dir': str(tmp/'pp2')}, nproc=2, capture=True, timeout=1200,
                    env={'OMP_NUM_THREADS': '1'})
    recs = read_metrics(tmp/'pp2')
    pp2 = statistics.median(r['tok_s'] for r in recs[2:])  # steps 3.. (step 1-2: warm-up)
    ideal = m / (m + 2 - 1)
    eff = pp2 / (2 * plain_1)
    print(f"tiny-chat model ({a.hidden}x{a.layers}), 64x128 tokens/step, {a.precision}, bot-only loss, {ncores} cores")
    print(f"plain single-process loop, {ncores} threads: {plain_all:8.0f} tok/s")
    print(f"plain single-process loop, 1 thread:  {plain_1:8.0f} tok/s")
    print(f"ock-train pp=2 on 2 processes (1 thread each): {pp2:8.0f} tok/s")
    print(f"ratio pp=2 / plain ({ncores} threads): {pp2 / plain_all:.2f}")
    print(f"pipeline efficiency tok/s(pp=2) / (2 x 1-thread plain): {eff:.2f}  (ideal 1F1B m/(m+p-1) = {m}/{m+1} = {ideal:.2f})")

def packing(a):
    from openchatkit.tiny import save_tiny_model
    from openchatkit.data import write_jsonl
    from openchatkit.config import load_train_config
    from openchatkit.trainer import reference_train
    tmp = Path(tempfile.mkdtemp(prefix='ock-bench-pack-'))
    texts = [f"<human>: What is {x} plus {y}?\n<bot>: {x} plus {y} is {x+y}." for x in range(10, 100) for y in range(10, 60, 3)]
    write_jsonl(tmp/'train.jsonl', [{'text': t} for t in texts])
    model = save_tiny_model(tmp/'model', 'gpt_neox', texts=texts, vocab_size=1024, hidden=a.hidden, layers=a.layers, heads=4,
                            max_positions=2048)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"tiny-chat model ({a.hidden}x{a.layers}), {a.steps} steps of 8192 tokens, {a.precision}, all cores; median of 3 interleaved runs")
    for seq in (256, 2048):
        base = dict(model=str(model), data=str(tmp/'train.jsonl'), seq_length=seq, micro_batch_size=max(1, 8192 // seq // 4),
                    gradient_accumulation_steps=4, total_steps=a.steps, lr=1e-3, precision=a.precision, checkpoint_every=0,
                    progress=False, log_backend='none', output_dir=str(tmp/'run'))
        cfgs = {m: load_train_config({**base, 'mask_documents': m}) for m in (False, True)}
        for c in cfgs.values(): reference_train(c, steps=1)              # warm-up
        times = {False: [], True: []}
        for _ in range(3):
            for m, c in cfgs.items():
                t = time.perf_counter()
                reference_train(c)
                times[m].append(time.perf_counter() - t)
        tok = {m: a.steps * 8192 / statistics.median(v) for m, v in times.items()}
        print(f"seq {seq:4d}: unmasked {tok[False]:7.0f} tok/s, masked {tok[True]:7.0f} tok/s, "
              f"ratio masked/unmasked {tok[True] / tok[False]:.3f} ({(1 - tok[True] / tok[False]) * 100:+.1f} % slower)")

if __name__ == '__main__':
    main()
