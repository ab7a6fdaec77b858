#!/usr/bin/env bash
# One prepared GPU check (< 8 minutes on one GPU): bf16 training throughput and MFU of a ~1B-parameter random
# GPT-NeoX with ock-train (DeepSpeed engine, nccl), then the tiny paths on nccl: fp16 with dynamic loss scaling,
# bf16, conversion with a logit check.      usage: bash bench/gpu.sh [PEAK_TFLOPS]   (default: from the GPU name)
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
W=$(mktemp -d /tmp/ock-gpu.XXXX)
PEAK=${1:-}
python - "$W" "$PEAK" <<'PY'
import sys, os, json, time, statistics, subprocess, torch
from pathlib import Path
W, peak = Path(sys.argv[1]), sys.argv[2]
from openchatkit.tiny import train_tokenizer, tiny_config
from openchatkit.data import write_jsonl
from openchatkit.train import launch_training
from openchatkit.checkpoint import read_metrics
from openchatkit.convert import convert_checkpoint, verify_conversion
name = torch.cuda.get_device_name(0)
peaks = {'H200': 989, 'H100': 989, 'A100': 312, 'L40': 181, 'A10': 125, '4090': 165}
peak = float(peak) if peak else next((v for k, v in peaks.items() if k in name), 312)
print(f"GPU: {name}, bf16 dense peak assumed {peak} TFLOP/s", flush=True)
texts = [f"<human>: What is {a} plus {b}?\n<bot>: {a} plus {b} is {a+b}. " * 8 for a in range(10, 99) for b in range(10, 99, 7)]
write_jsonl(W/'train.jsonl', [{'text': t} for t in texts])
tok = train_tokenizer(texts, vocab_size=1024)
# ~1B parameters: hidden 2048, 20 layers, 16 heads, vocab padded to 50304 (GPT-NeoX-like)
from transformers import GPTNeoXForCausalLM
cfg = tiny_config('gpt_neox', tokenizer=tok, hidden=2048, layers=20, heads=16, max_positions=2048)
cfg.vocab_size = 50304
with torch.device('cuda'): m = GPTNeoXForCausalLM(cfg).to(torch.bfloat16)
N = sum(p.numel() for p in m.parameters()); m.save_pretrained(W/'m1b'); tok.save_pretrained(W/'m1b'); del m
torch.cuda.empty_cache()
print(f"model: {N/1e9:.2f}B parameters", flush=True)
S, mb, gas, steps = 2048, 8, 4, 14
t0 = time.time()
launch_training(dict(model=str(W/'m1b'), data=str(W/'train.jsonl'), seq_length=S, micro_batch_size=mb, gradient_accumulation_steps=gas,
                     total_steps=steps, lr=1e-4, warmup_steps=2, precision='bf16', checkpoint_every=0, output_dir=str(W/'run1b'),
                     progress=False, log_backend='print', backend='nccl'), nproc=1, timeout=420)
recs = read_metrics(W/'run1b'); tps = statistics.median(r['tok_s'] for r in recs[4:])
L, h = cfg.num_hidden_layers, cfg.hidden_size
flops_per_token = 6 * N + 12 * L * h * S          # weights fwd+bwd + attention scores
mfu = tps * flops_per_token / (peak * 1e12)
print(f"1B bf16 pp=1: {tps:,.0f} tokens/s, MFU {100*mfu:.1f}% (goal >= 40%); losses {recs[0]['loss']:.3f} -> {recs[-1]['loss']:.3f}; {time.time()-t0:.0f}s", flush=True)
# tiny paths on nccl (one GPU: world 1)
from openchatkit.tiny import save_tiny_model
tiny = save_tiny_model(W/'tiny', 'gpt_neox', texts=texts[:200], layers=4)
for prec in ('fp16', 'bf16', 'fp32'):
    out = W/f'tiny_{prec}'
    launch_training(dict(model=str(tiny), data=str(W/'train.jsonl'), seq_length=64, micro_batch_size=4, gradient_accumulation_steps=2,
                         total_steps=6, lr=1e-3, precision=prec, checkpoint_every=3, output_dir=str(out), progress=False,
                         log_backend='none', backend='nccl', zero_stage=1 if prec == 'bf16' else 0), nproc=1, timeout=300)
    r = read_metrics(out)
    hf = convert_checkpoint(out/'checkpoints', W/f'tiny_{prec}_hf')
    d = verify_conversion(out/'checkpoints', hf, atol=1e-3)
    print(f"tiny {prec} on nccl: loss {r[0]['loss']:.3f} -> {r[-1]['loss']:.3f}" + (f", loss scale {r[-1].get('loss_scale')}, skipped {r[-1].get('skipped')}" if prec == 'fp16' else '') + f"; converted logits max diff {d:.2e}", flush=True)
print("gpu check done", flush=True)
PY
