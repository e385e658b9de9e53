"""
Resumable training state: what train.py keeps so that a run can stop at any moment and continue exactly
(checkpoints written atomically, every RNG, stop requests, and the loss log cut back to the checkpoint).

out_dir/ckpt.pt       upstream's checkpoint (load.checkpoint_dict) plus a 'train_state' key upstream ignores:
                      the counters of Progress, the world size, every rank's RNG snapshot and the GradScaler
out_dir/ckpt_last.pt  the same, when the latest state is not the best one; resuming takes the newer file
out_dir/log.csv       one row per logged step and per eval; a resume drops the rows past its checkpoint
"""

import csv
import errno
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from configurator import UserError
from nanoprobs import atomic
from nanoprobs.load import CKPT, LAST, checkpoint_dict  # the file names, defined where loading reads them
LOG = 'log.csv'
LOG_FIELDS = ['iter', 'tokens', 'train_loss', 'val_loss', 'lr', 'kind', 'elapsed_s']


# -----------------------------------------------------------------------------
# checkpoints on disk

def save_checkpoint(ckpt, path):
    """Write atomically (atomic.write_all): to a temporary file in the same folder, flushed to disk, then
    renamed over the old one, so a crash or kill at any moment leaves either the previous checkpoint or the
    new one, never half a file. An operating-system error (a full disk) is a UserError naming path, the
    cause and what is kept."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic.write_all({path: lambda tmp: torch_save(ckpt, tmp)}, fsync=True)
    except OSError as e:
        raise UserError(f"could not save {path}: {e.strerror or e}{free_space(path)}; "
                        + kept_checkpoints(path)) from None


def torch_save(obj, path):
    """torch.save, whose write errors (a full disk) are an OSError like any other file's: torch reports
    them as a RuntimeError from its zip writer ('[enforce fail at inline_container.cc:...]')."""
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        if 'inline_container' not in str(e) and 'PytorchStreamWriter' not in str(e):
            raise
        raise OSError(errno.EIO, "torch could not write the file (is the disk full?)", path) from None


def free_space(path):
    """' (12 MB free on that disk)': what a message about a failed write adds, when it can be told."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return ''
    return f" ({free / 2 ** 20:,.0f} MB free on that disk)"


def kept_checkpoints(path):
    """What is on disk next to path after a failed save, and how to go on."""
    folder = os.path.dirname(path)
    kept = [p for p in (os.path.join(folder, CKPT), os.path.join(folder, LAST)) if os.path.exists(p)]
    if not kept:
        return "nothing was saved"
    return (f"{' and '.join(kept)} {'is' if len(kept) == 1 else 'are'} as before; fix the cause, then "
            "continue with --init_from=resume")


def remove_stale_saves(out_dir):
    """Delete the temporary files of saves that never finished (a run killed with kill -9, a power loss);
    a save still in progress (another run in the same folder) keeps its own."""
    for tmp, final in atomic.remove_stale(out_dir, names=(CKPT, LAST, LOG)):
        print(f"removed {os.path.basename(tmp)}: an unfinished save of an earlier run that was killed "
              f"({os.path.basename(final)} itself is intact)")


def resume_path(out_dir):
    """The newer of ckpt_last.pt and ckpt.pt: saving ckpt.pt removes ckpt_last.pt, so one that exists is
    the latest state unless it is older."""
    ckpt, last = os.path.join(out_dir, CKPT), os.path.join(out_dir, LAST)
    if not os.path.exists(last):
        return ckpt
    return last if not os.path.exists(ckpt) or os.path.getmtime(last) >= os.path.getmtime(ckpt) else ckpt


@dataclass
class Progress:
    """A run's counters beyond upstream's iter_num and best_val_loss (the checkpoint's train_state)."""
    evaluated_iter: int = -1  # the eval at this iter is already done (and logged)
    evals_without_improvement: int = 0
    best_iter: int = -1  # the iteration of best_val_loss (-1: not known, as in upstream's checkpoints)
    tokens_seen: int = 0
    elapsed: float = 0.0  # training seconds of all sessions of this run

    @classmethod
    def from_state(cls, state, tokens_seen):
        """The counters of a checkpoint's train_state; tokens_seen is the estimate where it has none."""
        return cls(**{'tokens_seen': tokens_seen,
                      **{k: v for k, v in state.items() if k in cls.__dataclass_fields__}})


def save(path, model, optimizer, iter_num, best_val_loss, config, progress, rngs, scaler, tokenizer=None,
         lora=None):
    """Write the current state, with every rank's RNG snapshot (rngs) and the tokenizer's record,
    atomically to path. Saving ckpt.pt removes ckpt_last.pt: ckpt.pt is then the latest state.
    lora: a LoRA run's lora.Run, which keeps the adapters and the base's name instead of the weights."""
    train_state = dict(asdict(progress), world_size=len(rngs), rng=rngs,
                       scaler=scaler.state_dict() if scaler.is_enabled() else {})
    tqdm.write(f"saving checkpoint to {path}")
    ckpt = checkpoint_dict(model, optimizer, iter_num, best_val_loss, config, tokenizer,
                           train_state=train_state)
    if lora is not None:
        ckpt = lora.checkpoint(ckpt, model)
    save_checkpoint(ckpt, path)
    last = os.path.join(os.path.dirname(path), LAST)
    if os.path.basename(path) == CKPT and os.path.exists(last):
        os.remove(last)


def restore_optimizer(optimizer, checkpoint, verbose=True):
    """Load the checkpoint's AdamW state; which kernel runs it (fused/foreach) stays this run's choice."""
    if not checkpoint.get('optimizer'):
        if verbose:
            print("note: the checkpoint has no optimizer state; AdamW starts afresh")
        return
    how = {k: optimizer.param_groups[0].get(k) for k in ('fused', 'foreach')}
    optimizer.load_state_dict(checkpoint['optimizer'])
    for group in optimizer.param_groups:
        group.update(how)


# -----------------------------------------------------------------------------
# random state

def rng_snapshot(data_gen_state, device):
    """Every random state this process uses, as tensors and plain values (weights_only loading reads them).
    data_gen_state is the batch sampler's state before the pending batch was drawn."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    snap = {'torch': torch.get_rng_state(), 'python': random.getstate(),
            'numpy': [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            'data': data_gen_state}
    device_type = torch.device(device).type
    if device_type == 'cuda':
        snap['cuda'] = torch.cuda.get_rng_state(device)
    elif device_type == 'mps' and hasattr(torch, 'mps') and hasattr(torch.mps, 'get_rng_state'):
        snap['mps'] = torch.mps.get_rng_state()
    return snap


def restore_rng(snap, data_gen, device):
    """Put back what rng_snapshot recorded, the batch sampler data_gen included."""
    torch.set_rng_state(snap['torch'])
    v, internal, gauss = snap['python']
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = snap['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    data_gen.set_state(snap['data'])
    device_type = torch.device(device).type
    if 'cuda' in snap and device_type == 'cuda':
        torch.cuda.set_rng_state(snap['cuda'], device)
    if 'mps' in snap and device_type == 'mps':
        torch.mps.set_rng_state(snap['mps'])


def gather(snap, world_size):
    """Every rank's snapshot (DDP), so a resume restores each rank's own RNG and sampler."""
    if world_size == 1:
        return [snap]
    out = [None] * world_size
    torch.distributed.all_gather_object(out, snap)
    return out


# -----------------------------------------------------------------------------
# stop requests

class StopRequest:
    """Ctrl-C / SIGTERM: remember it, let the loop stop at the next safe point and save. A second one,
    a few seconds later, quits at once (a signal arriving with the first, as torchrun forwards them, is
    the same request). Creating one installs it for SIGINT and SIGTERM; announce prints what happens."""

    def __init__(self, announce=True):
        self.signum, self.at, self.announce = 0, 0.0, announce
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)

    def __call__(self, signum, frame):
        if self.signum and time.time() - self.at > 2.0:
            raise KeyboardInterrupt
        if not self.signum:
            self.signum, self.at = signum, time.time()
            if self.announce:
                tqdm.write(f"\n{signal.Signals(signum).name}: stopping at the next safe point to save a "
                           "checkpoint (press Ctrl-C again to quit at once without saving)")


# -----------------------------------------------------------------------------
# the loss log

class LossLog:
    """out_dir/log.csv, and the history loss.png draws: (iter, loss) per step, (iter, train, val) per eval."""

    def __init__(self, path):
        self.path = path
        self.history = {'step': [], 'eval': []}

    def start(self, resume, iter_num, evaluated):
        """A fresh log, or on resume the rows before iter_num (and iter_num's eval if evaluated): the rows
        logged after the checkpoint are dropped, so the curve continues as if the run had never stopped."""
        rows, self.history = [], {'step': [], 'eval': []}
        if resume and os.path.exists(self.path):
            with open(self.path, newline='') as f:
                for r in csv.DictReader(f):
                    i = int(r['iter'])
                    if i < iter_num or (i == iter_num and r['kind'] == 'eval' and evaluated):
                        rows.append(r)

        def write(tmp):
            with open(tmp, 'w', newline='') as f:
                w = csv.DictWriter(f, LOG_FIELDS)
                w.writeheader()
                w.writerows(rows)
        try:
            atomic.write_all({self.path: write})  # a kill while cutting it back leaves the old log, whole
        except OSError as e:  # a disk already full at the start
            raise UserError(f"could not write {self.path}: {e.strerror or e}{free_space(self.path)}; "
                            + kept_checkpoints(self.path)) from None
        for r in rows:
            self._remember(r['kind'], int(r['iter']), float(r['train_loss']), r['val_loss'])

    def add(self, kind, iter_num, tokens, lr, elapsed, train_loss, val_loss=''):
        row = dict(iter=iter_num, tokens=tokens, train_loss=f"{train_loss:.6f}",
                   val_loss=f"{val_loss:.6f}" if val_loss != '' else '', lr=f"{lr:.6g}", kind=kind,
                   elapsed_s=f"{elapsed:.1f}")
        try:
            with open(self.path, 'a', newline='') as f:
                f.write(','.join(str(row[k]) for k in LOG_FIELDS) + '\n')
        except OSError as e:  # a full disk: the run stops here, as when a checkpoint cannot be saved
            raise UserError(f"could not write {self.path}: {e.strerror or e}{free_space(self.path)}; "
                            + kept_checkpoints(self.path)) from None
        self._remember(kind, iter_num, train_loss, val_loss)

    def _remember(self, kind, iter_num, train_loss, val_loss):
        if kind == 'eval':
            self.history['eval'].append((iter_num, train_loss, float(val_loss)))
        else:
            self.history['step'].append((iter_num, train_loss))
