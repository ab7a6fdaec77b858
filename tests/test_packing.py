"""Packed documents cannot see each other, in both trainers: a document's loss is the same whether or not another
document precedes it in the block (through the LoRA trainer's own forward; the pipeline's is in 21_pipeline and its
DeepSpeed engine equals `reference_train` in test_train); and, training with the pipeline layers, an answer knowable only
from the previous document of the block is learned with OpenChatKit's leaky packing and not with ours."""
import random
import pytest, torch
from openchatkit.tiny import save_tiny_model
from openchatkit.data import write_jsonl
from openchatkit.config import load_train_config

pytestmark = pytest.mark.timeout(900)
EOT = '<|endoftext|>'

@pytest.fixture(scope='module')
def copy_task(tmp_path_factory):
    "Records `The number is K.<eot>Say it: K`: after the end-of-text, K is knowable only from the document before it."
    d, rng = tmp_path_factory.mktemp('packing'), random.Random(0)
    recs = [f"The number is {k}.{EOT}Say it: {k}" for k in (rng.randrange(10) for _ in range(400))]
    write_jsonl(d/'train.jsonl', [{'text': r} for r in recs])
    return d, save_tiny_model(d/'m', 'gpt_neox', texts=recs * 3, layers=2, hidden=64)

def _cfg(d, m, **kw):
    return load_train_config(dict(model=str(m), data=str(d/'train.jsonl'), seq_length=24, micro_batch_size=8, total_steps=200, lr=3e-3,
                                  warmup_steps=10, progress=False, log_backend='none', seed=1, pack='whole',
                                  **{'output_dir': str(d/'o'), **kw}))

def _copied(model, tok) -> int:
    "Of the ten numbers, how many the model says after `Say it:` when the previous document named it."
    digits = [tok.encode(f' {k}')[0] for k in range(10)]
    with torch.no_grad():
        return sum(int(model(torch.tensor([tok.encode(f"The number is {k}.{EOT}Say it:")]))[0, -1, digits].argmax()) == k
                   for k in range(10))

def test_previous_document_is_not_learnable(copy_task):
    from transformers import AutoTokenizer
    from openchatkit.trainer import reference_train
    d, m = copy_task
    tok = AutoTokenizer.from_pretrained(m)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, leaky = reference_train(_cfg(d, m, mask_documents=False))
        _, masked = reference_train(_cfg(d, m, mask_documents=True))
    finally: torch.set_num_threads(n)
    leaky.eval()
    masked.eval()
    assert _copied(leaky, tok) >= 8          # measured 10/10: the leak carries the answer across documents
    assert _copied(masked, tok) <= 3         # measured 1/10: chance

def test_lora_forward_keeps_documents_apart(copy_task, tmp_path):
    "The LoRA trainer's loss on document B alone equals its loss on B after A in the block; with `mask_documents: false` it does not."
    from openchatkit.lora import LoraTrainer
    d, m = copy_task
    torch.manual_seed(0)
    A, B = torch.randint(1, 30, (1, 9)), torch.randint(1, 30, (1, 6))   # (the tiny vocabulary: 0 is the end-of-text)
    block = torch.cat([A, torch.tensor([[0]]), B], 1)
    y_alone, y_block = B.clone(), torch.full_like(block, -100)
    y_block[:, 10:] = B                                         # the loss on B's tokens only (B's first one is not predicted)
    y_alone[:, :1] = -100
    y_block[:, 10] = -100
    got = {}
    for mask in (True, False):
        t = LoraTrainer(_cfg(d, m, lora=True, lora_r=4, mask_documents=mask, output_dir=str(tmp_path/f'o{mask}'))).setup()
        with torch.no_grad(): got[mask] = (t.forward_loss(B, y_alone).item(), t.forward_loss(block, y_block).item())
    assert got[True][0] == pytest.approx(got[True][1], abs=1e-5), got
    assert abs(got[False][0] - got[False][1]) > 1e-2, got
