"""
Train a GPT from scratch, fine-tune GPT-2, or resume a run: upstream nanoGPT's loop and flags, on CPU,
CUDA or Apple MPS, on one device or many (DistributedDataParallel through torchrun).

Fine-tune GPT-2 on children's stories (make the data first: python data/children_stories/prepare.py):
$ python train.py config/finetune_children_stories.py                 # device=auto: CUDA, else MPS, else CPU
$ python train.py config/finetune_children_stories.py --device=mps --batch_size=4
$ python train.py config/finetune_children_stories.py --init_from=resume  # after Ctrl-C, a crash, more iters
$ python train.py config/finetune_children_stories.py --freeze_layers=10  # only the last 2 blocks train
$ python train.py config/finetune_children_stories_cpu.py   # LoRA adapters (PEFT): GPT-2 in ~5 min on a CPU
A small model from scratch, to watch one learn (115 s on 2 CPU cores, see the config):
$ python train.py config/train_stories_tiny.py

Many GPUs, as upstream (NCCL on CUDA); the same command runs CPU processes with gloo (--device=cpu):
$ torchrun --standalone --nproc_per_node=4 train.py config/finetune_children_stories.py
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=1234 train.py
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=1234 train.py
(If your cluster does not have Infiniband interconnect prepend NCCL_IB_DISABLE=1.)

What it writes to out_dir:
  ckpt.pt       upstream's checkpoint: the best val loss so far (always_save_checkpoint=False), or the state
                at the latest eval (True). Upstream nanoGPT's sample.py and train.py load it unchanged.
  ckpt_last.pt  the latest state, when it is newer than ckpt.pt (after Ctrl-C, early stopping, the end of
                the run, or an eval that did not improve). --init_from=resume continues from the newer one.
                A LoRA run's (lora_rank > 0, nanoprobs/lora.py) holds the adapters and the name and checksum
                of its base instead of the weights: MBs, not GBs.
  log.csv       iter, tokens, train_loss, val_loss, lr (one row per logged step, one per eval); loss.png
                draws it at each eval.
Every save is atomic (temp file, then rename). Ctrl-C or SIGTERM stops at the next safe point, saves the
current state and exits; a second Ctrl-C quits at once without saving. A resumed run continues exactly:
same iteration, optimizer, learning-rate schedule, RNG and batch sampling, so the loss curve goes on as if
never stopped. A NaN/inf loss stops the run before the optimizer step, without saving.
"""


import math
import os
import random
import signal
import sys
import time


def _starting(signum, frame):
    """Ctrl-C while starting (imports, loading, building the model): nothing trained yet, so nothing to save;
    one line, not a traceback from inside an import. The StopRequest below takes over before training."""
    print(f"\n{signal.Signals(signum).name} while starting: stopped before training began", file=sys.stderr)
    raise SystemExit(130)


signal.signal(signal.SIGINT, _starting)

import numpy as np
import torch
from tqdm import tqdm

from nanoprobs import checks, freeze
from nanoprobs import lora
from nanoprobs import trainstate
from configurator import UserError, configure, one_line_errors
from nanoprobs.load import (autocast_ctx, describe_init_from, device_type_of, load_checkpoint,
                            model_from_checkpoint, pretrained_model, resolve_device, resolve_dtype, should_compile,
                            use_grad_scaler)
from nanoprobs.formatting import file_size
from nanoprobs.tokenizer import data_tokenizer
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# default config values designed to train a gpt2 (124M) on OpenWebText, as upstream
# I/O
out_dir: str = 'out'
eval_interval: int = 2000
log_interval: int = 1
eval_iters: int = 200
eval_only: bool = False  # if True, script exits right after the first eval
always_save_checkpoint: bool = True  # save after every eval (False: only when the val loss improves)
init_from: str = 'scratch'  # 'scratch', 'resume', 'gpt2*', a Hugging Face GPT-2 folder, or a checkpoint
early_stop_patience: int = 0  # stop after this many evals in a row without a better val loss (0 = never)
# wandb logging
wandb_log: bool = False  # disabled by default
wandb_project: str = 'owt'
wandb_run_name: str = 'gpt2'  # 'run' + str(time.time())
# data
dataset: str = 'openwebtext'
data_dir: str = ''  # folder holding train.bin and val.bin; '' = data/<dataset>
gradient_accumulation_steps: int = 5 * 8  # used to simulate larger batch sizes
batch_size: int = 12  # if gradient_accumulation_steps > 1, this is the micro-batch size
block_size: int = 1024
# model
n_layer: int = 12
n_head: int = 12
n_embd: int = 768
dropout: float = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias: bool = False  # do we use bias inside LayerNorm and Linear layers?
gelu: str = 'exact'  # from scratch: 'exact' (upstream nanoGPT) or 'tanh' (GPT-2); other models keep their own
freeze_layers: int = 0  # freeze the embeddings and the first N blocks (-1: all; 0: none); see freeze.py
train_tied_head: bool = False  # with freeze_layers: train the token embedding anyway, which is also lm_head
# LoRA on Hugging Face PEFT (nanoprobs/lora.py): low-rank adapters train, the base stays frozen and unsaved
lora_rank: int = 0  # rank of the adapters (0: off, every weight trains); 8 is a common start
lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
lora_dropout: float = 0.0  # dropout on the adapters' input (PEFT's default; it costs memory: a copy per layer)
lora_targets: str = 'all'  # 'all' or a comma list of attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
# adamw optimizer
learning_rate: float = 6e-4  # max learning rate
max_iters: int = 600000  # total number of training iterations
weight_decay: float = 1e-1
beta1: float = 0.9
beta2: float = 0.95
grad_clip: float = 1.0  # clip gradients at this value, or disable if == 0.0
# learning rate decay settings
decay_lr: bool = True  # whether to decay the learning rate
warmup_iters: int = 2000  # how many steps to warm up for
lr_decay_iters: int = 600000  # should be ~= max_iters per Chinchilla
min_lr: float = 6e-5  # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
# DDP settings
backend: str = 'auto'  # 'nccl', 'gloo', etc.; 'auto' = nccl on CUDA, gloo on CPU
# system
device: str = 'auto'  # 'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'auto'  # 'auto': bfloat16/float16 on CUDA, bfloat16 autocast on CPUs with AMX/AVX512-BF16, else float32
compile: bool = True  # torch.compile the model where it helps (CUDA, not Windows); ignored elsewhere
seed: int = 1337  # each DDP rank adds its rank
progress: bool = True  # show a progress bar with ETA and tokens/s
plot: bool = True  # redraw out_dir/loss.png at each eval
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items()
               if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
given = configure(globals())  # overrides from command line or config file; the keys they set
one_line_errors()  # bad input (a UserError) ends the run with one line `error: ...`, as run_main elsewhere
freeze_asked = given & set(freeze.KEYS)  # freezing asked for explicitly: a resume must not change it
# -----------------------------------------------------------------------------

device = resolve_device(device)  # a ValueError that names the fix: one line, as a UserError
dtype_auto = dtype == 'auto'
dtype = resolve_dtype(dtype, device_type_of(device), training=True)
device_type = device_type_of(device)
for _k in ('eval_interval', 'log_interval', 'eval_iters', 'gradient_accumulation_steps', 'batch_size',
           'block_size'):
    if globals()[_k] < 1:
        raise UserError(f"{_k}={globals()[_k]} must be at least 1")
for _k in ('max_iters', 'warmup_iters', 'lr_decay_iters', 'early_stop_patience', 'seed', 'lora_rank'):
    if globals()[_k] < 0:
        raise UserError(f"{_k}={globals()[_k]} must be at least 0")
for _k in ('learning_rate', 'min_lr', 'weight_decay', 'grad_clip'):
    if not 0 <= globals()[_k] < math.inf:  # nan fails too
        raise UserError(f"{_k}={globals()[_k]} must be a finite number, at least 0")
for _k in ('dropout', 'beta1', 'beta2', 'lora_dropout'):
    if not 0 <= globals()[_k] < 1:
        raise UserError(f"{_k}={globals()[_k]} must be at least 0 and less than 1")
if decay_lr and lr_decay_iters < warmup_iters:  # equal is fine: min_lr right after the warmup
    raise UserError(f"lr_decay_iters={lr_decay_iters} is less than warmup_iters={warmup_iters}: the rate "
                    "warms up, then decays until lr_decay_iters; raise lr_decay_iters (or --decay_lr=False)")
if init_from == 'scratch':  # other models bring their own architecture
    checks.check_model_args(dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                                 bias=bias, dropout=dropout))
if wandb_log:
    try:
        import wandb
    except ImportError:
        raise UserError("wandb_log=True needs the wandb package: pip install wandb (or --wandb_log=False)") \
            from None
if decay_lr and min_lr > learning_rate:  # decay_lr=False ignores min_lr, as upstream's fine-tuning configs do
    raise UserError(f"min_lr={min_lr} is above learning_rate={learning_rate}: the learning rate decays from "
                    "learning_rate down to min_lr; lower min_lr (or --decay_lr=False for a constant rate)")
ddp = int(os.environ.get('RANK', -1)) != -1  # is this a ddp run (launched by torchrun)?
if ddp:
    if device_type == 'mps':
        raise UserError("DistributedDataParallel does not run on Apple MPS; "
                        "train with one process (python train.py)")
    backend = backend if backend != 'auto' else ('nccl' if device_type == 'cuda' else 'gloo')
    torch.distributed.init_process_group(backend=backend)
    ddp_rank = int(os.environ['RANK'])
    ddp_local_rank = int(os.environ['LOCAL_RANK'])
    ddp_world_size = int(os.environ['WORLD_SIZE'])
    if device_type == 'cuda':
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    else:  # CPU processes on one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get('LOCAL_WORLD_SIZE', 1))))
    master_process = ddp_rank == 0  # this process will do logging, checkpointing etc.
    seed_offset = ddp_rank  # each process gets a different seed
    # world_size number of processes will be training simultaneously, so we can scale
    # down the desired gradient accumulation iterations per process proportionally
    if gradient_accumulation_steps % ddp_world_size:
        raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of "
                        f"the number of processes ({ddp_world_size}): each process takes an equal share")
    gradient_accumulation_steps //= ddp_world_size
else:
    master_process = True
    seed_offset = 0
    ddp_world_size = 1
    backend = backend if backend != 'auto' else 'none'
checks.check_seed(seed, count=ddp_world_size)  # each process seeds with seed + its rank
config = {k: globals()[k] for k in config_keys}  # every setting, resolved; saved in the checkpoint
lora_settings = lora.new_run_settings(config) if lora_rank and init_from != 'resume' else None  # checked now
tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
ckpt_path = os.path.join(out_dir, trainstate.CKPT)
last_path = os.path.join(out_dir, trainstate.LAST)
if master_process:
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
    print(f"device: {device}, dtype: {dtype}" + (f", {ddp_world_size} processes ({backend})" if ddp else "")
          + (" (dtype=auto: this CPU has native bfloat16 matmuls, so bfloat16 autocast over float32 weights; "
             "--dtype=float32 for plain float32)" if dtype_auto and device_type == 'cpu' and dtype != 'float32'
             else ""))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:  # a file in the way, no permission, a read-only disk
        raise UserError(f"cannot create out_dir={out_dir!r}: {e.strerror}; use another --out_dir") from None
    trainstate.remove_stale_saves(out_dir)
torch.manual_seed(seed + seed_offset)
random.seed(seed + seed_offset)
np.random.seed(seed + seed_offset)
torch.backends.cuda.matmul.allow_tf32 = True  # allow tf32 on matmul
torch.backends.cudnn.allow_tf32 = True  # allow tf32 on cudnn
ctx = autocast_ctx(device_type, dtype)  # bf16/fp16 autocast on any device that asks for it

# data: flat uint16 token ids, random windows of block_size + 1
data_dir = data_dir or os.path.join('data', dataset)
bin_paths = {split: os.path.join(data_dir, f'{split}.bin') for split in ('train', 'val')}
for split, path in bin_paths.items():
    if not os.path.exists(path):
        raise UserError(f"{path} not found: make train.bin and val.bin with prepare_bin.py "
                        f"--out_dir={data_dir} (or data/<name>/prepare.py), or point --dataset / --data_dir "
                        f"at the folder that has them")
    n_tokens = checks.check_bin(path)
    if n_tokens <= block_size + 1:
        raise UserError(f"{path} holds {n_tokens} tokens, fewer than block_size + 2 = {block_size + 2}; "
                        f"use more text or a smaller --block_size")

# -----------------------------------------------------------------------------
# model init: scratch, resume (architecture from the checkpoint, dropout from here), gpt2* / HF folder,
# checkpoint
ARCH = ('n_layer', 'n_head', 'n_embd', 'bias', 'gelu')  # settings only a model from scratch takes
iter_num = 0
best_val_loss = 1e9
checkpoint = None  # the checkpoint we resume: optimizer, GradScaler, train_state (RNG, sampler, counters)
lora_run = None  # a LoRA run (nanoprobs/lora.py): its adapters' settings and its base
data_tok = data_tokenizer(data_dir)  # meta.pkl (characters) or tokenizer.json (trained BPE); None: GPT-2 ids
meta_vocab_size = data_tok.vocab_size if data_tok else None
if meta_vocab_size is not None and master_process:
    print(f"found vocab_size = {meta_vocab_size} (inside {data_tok.name})")
tok_record = data_tok.record if data_tok else {'kind': 'gpt2'}  # in every checkpoint: it decodes alone
try:
    if init_from == 'scratch':
        if master_process:
            print("Initializing a new model from scratch")
            if meta_vocab_size is None:
                print("defaulting to vocab_size of GPT-2 to 50304 (50257 rounded up for efficiency)")
            for p in (ckpt_path, last_path):
                if os.path.exists(p):
                    print(f"note: {p} exists and will be overwritten "
                          "(--init_from=resume continues it instead)")
        arch = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                    vocab_size=meta_vocab_size or 50304)
        n = checks.n_params(arch)  # training keeps weights, gradients and AdamW's two moments: 16 bytes each
        checks.check_fits(16 * n, device, f"a model of {n:,} parameters (weights, gradients and AdamW's two "
                          "moments in float32)", "choose a smaller --n_layer or --n_embd")
        model = GPT(GPTConfig(**arch, dropout=dropout, gelu=gelu))
    elif init_from == 'resume':
        path = trainstate.resume_path(out_dir)
        checkpoint = load_checkpoint(path, map_location='cpu')
        model = model_from_checkpoint(checkpoint, dropout, path, merge=False)  # a LoRA run: adapters on
        iter_num = int(checkpoint.get('iter_num', 0))
        best_val_loss = float(checkpoint.get('best_val_loss', 1e9))
        freeze_layers, train_tied_head = freeze.resumed(checkpoint.get('config'), config, freeze_asked)
        config.update(freeze_layers=freeze_layers, train_tied_head=train_tied_head)  # the checkpoint's
        lora_run = lora.Run.resumed(checkpoint, config, given)  # its LoRA settings (config gets them), or None
        if master_process:
            print(f"Resuming training from {path} (iter {iter_num}, best val loss {best_val_loss:.4f})")
            per_run = ('init_from', 'max_iters', 'device', 'dtype', 'backend')
            changed = {k: (v, config[k]) for k, v in (checkpoint.get('config') or {}).items()
                       if k in config and v != config[k] and k not in per_run + ARCH}
            if changed:
                print("note: settings differ from the checkpoint's: " +
                      ', '.join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    else:
        kind, where = describe_init_from(init_from, out_dir)
        if master_process:
            print(f"Initializing from {where}")
        if kind == 'ckpt':  # a new run that starts from a checkpoint's weights
            model = model_from_checkpoint(load_checkpoint(where), dropout, where)
        else:  # OpenAI's GPT-2 (downloads) or a local Hugging Face GPT-2 folder
            model = pretrained_model(kind, where, dropout)
except (ValueError, FileNotFoundError, OSError) as e:
    raise UserError(str(e)) from None
if lora_settings:  # a new LoRA run: this model is its frozen base, named in its checkpoints by checksum
    lora_run = lora.Run(lora_settings, lora.Base.of(where, model, hub=kind == 'gpt2'))
if init_from != 'scratch':  # the model brings its architecture: the saved config says what it is
    kept = {k: getattr(model.config, k) for k in ARCH}
    if init_from == 'resume' and master_process and any(v != config[k] for k, v in kept.items()):
        print("note: resuming keeps the checkpoint's " + ', '.join(
            f"{k}={v!r} (not {config[k]!r})" for k, v in kept.items() if v != config[k])
            + ": a run's architecture cannot change")
    for k, v in kept.items():
        globals()[k] = config[k] = v
# crop down the model block size if desired, using model surgery
if block_size < model.config.block_size:
    model.crop_block_size(block_size)
elif block_size > model.config.block_size:
    if master_process:
        print(f"note: block_size={block_size} is larger than the model's {model.config.block_size}; using "
              f"{model.config.block_size}")
    block_size = config['block_size'] = model.config.block_size
    tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
    if master_process:
        print(f"tokens per iteration are therefore: {tokens_per_iter:,}")
if meta_vocab_size is None and model.config.vocab_size < 50257:
    raise UserError(f"the model has vocab_size {model.config.vocab_size} but {data_dir} has no meta.pkl or "
                    "tokenizer.json: its .bin files hold GPT-2 token ids (up to 50256)")
model_vocab = model.config.vocab_size  # every batch's ids are checked against it (get_batch)
if lora_run and init_from != 'resume':  # (a resumed LoRA run came back with its adapters on)
    lora.attach(model, lora_run.settings)
if dtype == 'float64':
    model.double()
model.to(device)

# GradScaler only for float16 on CUDA; otherwise it is a no-op
if hasattr(torch.amp, 'GradScaler'):
    scaler = torch.amp.GradScaler('cuda', enabled=use_grad_scaler(device_type, dtype))
else:  # torch < 2.3
    scaler = torch.cuda.amp.GradScaler(enabled=use_grad_scaler(device_type, dtype))


def keep_freed_memory():
    """glibc hands every large freed block back to the OS and page-faults it in again at the next
    iteration (~10% of a CPU step for GPT-2 124M); keep freed memory in the heap for reuse instead."""
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve big blocks from the heap, not from fresh mmaps
        libc.mallopt(-1, 2 ** 31 - 1)  # M_TRIM_THRESHOLD: do not give free heap back to the OS
    except (OSError, AttributeError):  # not Linux/glibc: nothing to tune
        pass


if device_type == 'cpu' and sys.platform.startswith('linux'):
    keep_freed_memory()


def cpu_fused_adamw():
    """PyTorch 2.4+ has a fused AdamW kernel for CPU, several times faster than foreach there."""
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, ValueError, TypeError):
        return False


# optimizer
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type,
                                       fused=True if device_type == 'cpu' and cpu_fused_adamw() else None)
state = (checkpoint or {}).get('train_state') or {}  # what train.py adds to upstream's checkpoint
if checkpoint is not None:
    trainstate.restore_optimizer(optimizer, checkpoint, verbose=master_process)
    if state.get('scaler') and scaler.is_enabled():
        scaler.load_state_dict(state['scaler'])
checkpoint = None  # free up memory

# layer freezing, after the optimizer is built: its groups keep every parameter, as upstream's (so either
# project resumes the checkpoint), and a frozen one never gets a gradient, so AdamW keeps no state for it
if lora_run:  # PEFT made only the adapters trainable; the optimizer holds nothing else
    if master_process:
        print('\n'.join(lora_run.describe(model)))
else:
    n_trainable, n_total = freeze.freeze(model, freeze_layers, train_tied_head)
    if master_process:
        print('\n'.join(freeze.describe(model, freeze_layers, train_tied_head, n_trainable, n_total)))

# compile the model
raw_model = model  # the GPT itself: saved, and used for MFU
if should_compile(compile, device_type):
    if master_process:
        print("compiling the model... (takes a ~minute)")
    model = torch.compile(model)  # requires PyTorch 2.0
eval_model = model  # master evaluates alone, outside DDP (no collective calls)
# wrap model into DDP container
if ddp:
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)

# resumable state: the run's counters, every RNG, and the batch sampler as it was before the pending batch
data_gen = torch.Generator()  # draws the training batches; its state goes into checkpoints
data_gen.manual_seed(seed + seed_offset)
run = trainstate.Progress.from_state(state, tokens_seen=iter_num * tokens_per_iter)
saved_iter = iter_num if init_from == 'resume' else -1  # the latest state on disk is from this iteration
if init_from == 'resume' and len(state.get('rng') or []) == ddp_world_size:
    trainstate.restore_rng(state['rng'][seed_offset], data_gen, device)
elif init_from == 'resume':
    if master_process:
        print("note: the checkpoint has no sampling state for this number of processes "
              "(upstream's format, or another world size): batches are drawn afresh")
    data_gen.manual_seed(seed + seed_offset + 1000 * iter_num)


# -----------------------------------------------------------------------------
# helpers

def get_batch(split, generator):
    """A batch (x, y), each (batch_size, block_size), of random windows of split, drawn with generator."""
    # reopen the memmap every batch, as upstream: keeping one open makes memory grow over a long run
    data = np.memmap(bin_paths[split], dtype=np.uint16, mode='r')
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
    xy = torch.from_numpy(data[ix[:, None] + np.arange(block_size + 1)].astype(np.int64))  # (B, T+1)
    checks.check_ids_below(int(xy.max()), model_vocab, bin_paths[split])  # the embedding would fail on it
    x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
    if device_type == 'cuda':
        # pin arrays x,y, which allows us to move them to GPU asynchronously (non_blocking=True)
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@torch.no_grad()
def estimate_loss(model, ctx, eval_iters, seed, stop):
    """Mean loss over eval_iters batches of each split: the same batches at every eval, so evals compare
    like with like. Returns None if a stop was requested meanwhile."""
    out = {}
    model.eval()
    for i, split in enumerate(('train', 'val')):
        gen = torch.Generator()
        gen.manual_seed(seed + 1_000_000 + i)  # apart from every rank's training sampler
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            if stop.signum:
                model.train()
                return None
            X, Y = get_batch(split, gen)
            with ctx:
                logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


# learning rate decay scheduler (cosine with warmup)
def get_lr(it):
    # 1) linear warmup for warmup_iters steps
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) from lr_decay_iters on, return min learning rate (what the cosine reaches there; and no division
    # by zero below when lr_decay_iters == warmup_iters: then min_lr follows the warmup directly)
    if it >= lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


def diverged(what, iter_num, lr, paths):
    """NaN/inf: the error that stops the run before the optimizer step (or a save) would spread it; the
    checkpoints at paths stay as they are."""
    kept = [p for p in paths if os.path.exists(p)]
    return UserError(f"{what} at iter {iter_num} (lr {lr:.3g}): training diverged and stopped; nothing saved"
                     f"{' (' + ' and '.join(kept) + ' are as they were)' if kept else ''}. "
                     f"Try a lower learning_rate, grad_clip=1.0, or dtype=float32")


def draw_loss(history, path, title):
    """Redraw loss.png from the log's history; False when it cannot be drawn (a chart is not worth a run)."""
    try:
        from nanoprobs.plots.training import plot_loss
        plot_loss(history['step'], history['eval'], path, title=title)
        return True
    except Exception as e:
        tqdm.write(f"warning: could not draw loss.png ({type(e).__name__}: {e}); plot=False from here on")
        return False


# -----------------------------------------------------------------------------

stop = trainstate.StopRequest(announce=master_process)  # Ctrl-C / SIGTERM: stop at a safe point and save

# logging
if wandb_log and master_process:
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
loss_log = trainstate.LossLog(os.path.join(out_dir, trainstate.LOG))  # and loss.png, drawn from its history
loss_png = os.path.join(out_dir, 'loss.png')
loss_title = (f"{os.path.basename(os.path.abspath(out_dir))}: "
              f"{init_from if init_from != 'resume' else 'resumed'}")
if master_process and not eval_only:  # an eval_only run measures; it leaves the run's log alone
    loss_log.start(init_from == 'resume', iter_num, evaluated=run.evaluated_iter == iter_num)
    if plot and loss_log.history['eval']:
        plot = draw_loss(loss_log.history, loss_png, loss_title)

# training loop
data_state = data_gen.get_state()
X, Y = get_batch('train', data_gen)  # fetch the very first batch
local_iter_num = 0  # number of iterations in the lifetime of this process
running_mfu = -1.0
tok_per_s = 0.0
early_stop = False
end = 'done'  # why the loop ended: done, eval_only, early_stop, interrupted
bar = tqdm(total=max_iters, initial=min(iter_num, max_iters), unit='it', dynamic_ncols=True, smoothing=0.1,
           disable=not (progress and master_process))
try:
    while True:
        snap = trainstate.rng_snapshot(data_state, device)  # this iteration's start, what a save records

        # determine and set the learning rate for this iteration
        lr = get_lr(iter_num) if decay_lr else learning_rate
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr

        # evaluate the loss on train/val sets and write checkpoints
        due = (iter_num % eval_interval == 0 or iter_num >= max_iters) and run.evaluated_iter != iter_num
        if eval_only or due:
            snaps = trainstate.gather(snap, ddp_world_size)
            losses = estimate_loss(eval_model, ctx, eval_iters, seed, stop) if master_process else None
            if losses is not None:
                if not all(map(math.isfinite, losses.values())):
                    raise diverged(f"eval loss {losses}", iter_num, lr, (ckpt_path, last_path))
                run.evaluated_iter = iter_num
                improved = losses['val'] < best_val_loss
                tqdm.write(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                           + ("" if improved or iter_num == 0 else f" (best {best_val_loss:.4f}"
                              + (f" at iter {run.best_iter})" if run.best_iter >= 0 else ")")))
                if not eval_only:
                    loss_log.add('eval', iter_num, run.tokens_seen, lr, run.elapsed, losses['train'],
                                 losses['val'])
                    if plot:
                        plot = draw_loss(loss_log.history, loss_png, loss_title)
                if wandb_log:
                    wandb.log({"iter": iter_num, "train/loss": losses['train'], "val/loss": losses['val'],
                               "lr": lr, "mfu": running_mfu * 100, "tokens": run.tokens_seen})
                if improved:
                    best_val_loss, run.best_iter, run.evals_without_improvement = losses['val'], iter_num, 0
                elif not eval_only:
                    run.evals_without_improvement += 1
                if iter_num > 0 and not eval_only:
                    save_path = ckpt_path if improved or always_save_checkpoint else last_path
                    trainstate.save(save_path, raw_model, optimizer, iter_num, best_val_loss, config, run,
                                    snaps, scaler, tok_record, lora_run)
                    saved_iter = iter_num
                if early_stop_patience and run.evals_without_improvement >= early_stop_patience:
                    early_stop = True
                    tqdm.write(f"early stop: {run.evals_without_improvement} evals without a better val loss "
                               f"than {best_val_loss:.4f} (iter {run.best_iter}); "
                               f"early_stop_patience={early_stop_patience}")
        if eval_only:
            end = 'eval_only'
            break
        if iter_num >= max_iters:
            break  # the final state was just evaluated; it is not trained further

        # forward backward update, with optional gradient accumulation to simulate larger batch size
        # and using the GradScaler if data type is float16
        t0 = time.time()
        aborted = False  # a single process stops between micro-steps; DDP ranks stop together, below
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(gradient_accumulation_steps):
            if not ddp and (stop.signum or early_stop):
                aborted = True
                break
            if ddp:
                # in DDP training we only need to sync gradients at the last micro step
                model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps  # scale the loss to account for gradient accum
            # immediately async prefetch next batch while model is doing the forward pass on the GPU
            data_state = data_gen.get_state()
            X, Y = get_batch('train', data_gen)
            # backward pass, with gradient scaling if training in fp16
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
        # clip the gradient
        norm = None
        if grad_clip != 0.0 and not aborted:
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        lossf = loss_sum.item() if not aborted else 0.0  # mean loss of the iteration; a sync point
        # with float16 the scaler skips steps with inf gradients; elsewhere they mean divergence
        bad = not math.isfinite(lossf) or (norm is not None and not scaler.is_enabled()
                                           and not torch.isfinite(norm))
        flags = [bool(stop.signum), early_stop, bad]
        if ddp:  # every rank stops at the same iteration
            t = torch.tensor(flags, dtype=torch.float32, device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flags = [bool(v) for v in t.tolist()]
        if flags[2]:
            what = f"loss {lossf}" if not math.isfinite(lossf) else f"gradient norm {float(norm)}"
            raise diverged(what, iter_num, lr, (ckpt_path, last_path))
        if aborted or flags[0] or flags[1]:
            optimizer.zero_grad(set_to_none=True)  # this iteration is dropped: a resume redoes it
            end = 'early_stop' if flags[1] else 'interrupted'
            break
        # step the optimizer and scaler if training in fp16
        scaler.step(optimizer)
        scaler.update()
        # flush the gradients as soon as we can, no need for this memory anymore
        optimizer.zero_grad(set_to_none=True)

        # timing and logging
        t1 = time.time()
        dt = t1 - t0
        run.elapsed += dt
        run.tokens_seen += tokens_per_iter
        tok_per_s = tokens_per_iter / dt if tok_per_s == 0 else 0.9 * tok_per_s + 0.1 * tokens_per_iter / dt
        if iter_num % log_interval == 0 and master_process:
            if local_iter_num >= 5:  # let the training loop settle a bit
                mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt)
                running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
            tqdm.write(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, "
                       f"mfu {running_mfu * 100:.2f}%")
            loss_log.add('step', iter_num, run.tokens_seen, lr, run.elapsed, lossf)
        bar.set_postfix_str(f"loss {lossf:.4f}, lr {lr:.2e}, {tok_per_s:,.0f} tok/s", refresh=False)
        bar.update(1)
        iter_num += 1
        local_iter_num += 1
except KeyboardInterrupt:  # the second Ctrl-C
    bar.close()
    if master_process:
        print(f"\nquit without saving; the checkpoints on disk are intact (last saved: iter {saved_iter})")
    sys.exit(130)
finally:
    bar.close()  # before the summary, or the one-line error of a diverged run

# keep the latest state on disk: after Ctrl-C, early stopping, or the end of the run
if end != 'eval_only':
    snaps = trainstate.gather(snap, ddp_world_size)  # the start of the iteration the run stopped at
    if master_process:
        if iter_num > 0 and saved_iter != iter_num:  # (nothing trained yet, or this very state is saved)
            trainstate.save(ckpt_path if always_save_checkpoint else last_path, raw_model, optimizer,
                            iter_num, best_val_loss, config, run, snaps, scaler, tok_record, lora_run)
            saved_iter = iter_num
        how = {'done': 'finished', 'early_stop': 'stopped early', 'interrupted': 'interrupted'}[end]
        print(f"{how} at iter {iter_num} ({run.tokens_seen:,} tokens, {run.elapsed / 60:.1f} min of "
              f"training); best val loss {best_val_loss:.4f}"
              + (f" at iter {run.best_iter}" if run.best_iter >= 0 else ""))
        if os.path.exists(ckpt_path):
            print(f"  {ckpt_path} ({file_size(os.path.getsize(ckpt_path))}): "
                  f"{'the latest state' if always_save_checkpoint else 'the best val loss'}; "
                  f"python sample.py --out_dir={out_dir}")
        elif iter_num > 0:
            print(f"  no {ckpt_path}: the val loss never improved on the first eval's")
        if os.path.exists(last_path):
            print(f"  {last_path} ({file_size(os.path.getsize(last_path))}): the latest state (iter {saved_iter})")
        if iter_num > 0:
            print(f"  continue with: python train.py ... --init_from=resume --out_dir={out_dir}"
                  + (" --max_iters=<more>" if end == 'done' else ""))

if ddp:
    torch.distributed.barrier()  # leave together once the master has saved (gloo aborts one that quits early)
    torch.distributed.destroy_process_group()
    # Leave without interpreter teardown: gloo's threads can still be winding down when Python finalizes,
    # and torch then aborts the process ("terminate called without an active exception") after a good
    # run. Every file is closed by now (checkpoints and log.csv are written and closed as they are made),
    # so only wandb's run and the buffered console output are left to close.
    if wandb_log and master_process:
        wandb.finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
