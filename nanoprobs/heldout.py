"""
Held-out metrics: perplexity, bits per byte and top-1/top-5 accuracy of a model on a .bin or text file.

    ids = read_val_ids('data/children_stories/val.bin', tok, max_tokens=20000)
    v = evaluate_val(model, tok, ids, path)      # a scores.ValResult; v.metrics() names and formats them
"""
import os
from contextlib import nullcontext

from configurator import UserError
from nanoprobs.scores import EvalDataError, ValResult


def check_val_path(path):
    if not os.path.isfile(path):
        raise EvalDataError(f"--val_data={path}: no such file. Give a held-out text file or a val.bin "
                            "(data/<dataset>/val.bin, written by prepare.py)")
    size = os.path.getsize(path)
    if path.endswith('.bin') and size % 2:  # checked before any model is loaded
        raise EvalDataError(f"--val_data={path} is {size:,} bytes, an odd number: a .bin holds 2-byte "
                            "(uint16) token ids, so this one is cut short or is not a token file. Write "
                            "it again with prepare.py or prepare_bin.py, or give a text file instead")


def read_val_ids(path, tok, max_tokens):
    """Token ids of held-out data (max_tokens predicted = max_tokens + 1 ids; 0 = all): a .bin of uint16
    ids (prepare.py's val.bin) is read as is, anything else as UTF-8 text encoded with tok."""
    check_val_path(path)
    n = max_tokens + 1 if max_tokens > 0 else None
    if path.endswith('.bin'):
        import numpy as np
        ids = np.memmap(path, dtype=np.uint16, mode='r')[:n].tolist() if os.path.getsize(path) else []
    else:
        try:
            with open(path, encoding='utf-8-sig') as f:  # a byte-order mark is not text
                # ~4 characters per GPT-2 token: read generously, never the whole of a huge file
                text = f.read(n * 16 if n else -1)
        except UnicodeDecodeError as e:  # replacing bytes would change the byte count of bits per byte
            raise EvalDataError(f"--val_data={path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                                "save it as UTF-8, or give a .bin of token ids") from None
        ids = tok.encode(text)[:n]
    if len(ids) < 2:
        raise EvalDataError(f"--val_data={path} holds {len(ids)} token(s); "
                            "at least 2 are needed to predict one")
    if max(ids) >= tok.vocab_size:
        raise EvalDataError(f"--val_data={path} holds token id {max(ids)}, beyond the {tok.vocab_size} "
                            f"tokens of the model's tokenizer ({tok.name}): was it made with another "
                            "tokenizer?")
    return ids


def evaluate_val(model, tok, ids, path='', stride=0, batch_size=16, ctx=None, progress=True):
    """Perplexity, bits per byte and top-1/top-5 accuracy of predicting ids[1:] from what precedes them.

    Sliding windows of block_size: the first predicts ids[1:block_size]; each next one predicts the
    following `stride` tokens after the block_size - stride before them. Every token is predicted once,
    by the same model.score() as the pairs (top-k correct: the token's rank under the model <= k)."""
    from tqdm import tqdm
    block_size = model.config.block_size
    stride = stride or max(1, block_size // 2)
    if not 1 <= stride < block_size:
        raise UserError(f"val_stride={stride} must be between 1 and block_size - 1 = {block_size - 1} "
                        "(0 = block_size // 2)")
    windows = [(ids[:1], ids[1:block_size])]  # (context, predicted tokens); each at most block_size long
    for end in range(block_size, len(ids), stride):
        stop = min(end + stride, len(ids))
        windows.append((ids[stop - block_size:end], ids[end:stop]))
    nll, top1, top5 = 0.0, 0, 0
    with ctx or nullcontext():
        for b in tqdm(range(0, len(windows), batch_size), desc=f"val {os.path.basename(path)}", unit='batch',
                      disable=not progress or len(windows) <= batch_size, leave=False):
            chunk = windows[b:b + batch_size]
            for s in model.score([w[0] for w in chunk], [w[1] for w in chunk]):
                nll -= float(s.logprobs.sum())
                top1 += int((s.ranks == 1).sum())
                top5 += int((s.ranks <= 5).sum())
    n = len(ids) - 1
    # UTF-8 bytes of the predicted text; a document separator (<|endoftext|>) is not text
    nbytes = sum(len(tok.token_bytes(t)) for t in ids[1:] if t != tok.eot)
    return ValResult(path, n, nbytes, nll, top1, top5, block_size, stride)
