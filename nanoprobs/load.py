"""
One place that turns `init_from` into a ready model, its tokenizer and the device/dtype setup.
Every script (sample.py, eval.py, train.py, ...) loads through here.

init_from:
  'resume'                 out_dir/ckpt.pt (a checkpoint written by train.py or by upstream nanoGPT)
  'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'   OpenAI's weights through transformers (downloads)
  a directory              with config.json: a local Hugging Face GPT-2 model; with ckpt.pt: that checkpoint
  a file path              a nanoGPT checkpoint (*.pt)

Checkpoints are read with torch.load(weights_only=True): a checkpoint is data and never runs code.
"""

import os
import pickle
import warnings
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from nanoprobs import checks
from nanoprobs.hf import GPT2_SIZES
from model import GPT, GPTConfig, MODEL_ARGS, state_dict_error
from nanoprobs.tokenizer import LoadError, Tokenizer, gpt2_tokenizer, tokenizer_for

UNWANTED_PREFIX = '_orig_mod.'  # keys saved from a torch.compile'd model




# -----------------------------------------------------------------------------
# device, dtype, autocast

def resolve_device(device='auto'):
    """'auto' -> 'cuda' if available, else 'mps' (Apple GPU) if available, else 'cpu'.
    An explicit device that is not available is an error, not a silent fallback."""
    if device == 'auto':
        if torch.cuda.is_available():
            return 'cuda'
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return 'mps'
        return 'cpu'
    kind = device.split(':')[0]
    if kind == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; "
                         "use --device=auto or --device=cpu")
    if kind == 'mps' and not (getattr(torch.backends, 'mps', None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} but Apple MPS is not available here; "
                         "use --device=auto or --device=cpu")
    if kind not in ('cpu', 'cuda', 'mps'):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def device_type_of(device):
    """'cuda:1' -> 'cuda'; what torch.autocast wants."""
    return device.split(':')[0]


DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16,
          'float64': torch.float64}


def resolve_dtype(dtype, device_type, training=False):
    """'auto' -> bfloat16 on CUDA GPUs with bfloat16 tensor cores (Ampere, compute capability 8, and newer),
    float16 on older ones (T4, V100: trained with a GradScaler); float32 on MPS (MPS float16 training has no
    loss scaling to keep small gradients alive; ask for it explicitly). On CPU, float32 for inference (its
    probabilities are exact to ~1e-6; --dtype=bfloat16 asks for bfloat16 weights, inference_weights), and
    for training bfloat16 autocast over float32 master weights where the CPU has native bfloat16 matmuls
    (cpu_has_bf16: 2.2x the float32 step of GPT-2 124M here, python -m bench.train_dtype shows the loss
    curves agree), float32 on CPUs without them, where bfloat16 would be emulated and slower."""
    if dtype == 'auto':
        if device_type == 'cuda':
            # not torch.cuda.is_bf16_supported(): newer torch says True where bfloat16 is only emulated
            return 'bfloat16' if torch.cuda.get_device_capability()[0] >= 8 else 'float16'
        if training and device_type == 'cpu' and cpu_has_bf16():
            return 'bfloat16'
        return 'float32'
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16, float16 or float64")
    if dtype == 'float64' and device_type == 'mps':
        raise ValueError("dtype=float64: Apple MPS has no float64; use float32 on mps, or --device=cpu")
    return dtype


def cpu_has_bf16():
    """Whether this CPU has native bfloat16 matmul units (Intel AMX tiles, or AVX512-BF16), where
    --dtype=bfloat16 runs fastest: torch's own check where it has one (torch >= 2.3), else the flags Linux
    lists in /proc/cpuinfo; False elsewhere. The benchmarks print it (bench/machine.py)."""
    checks = [getattr(torch.cpu, name, None) for name in ('_is_amx_tile_supported', '_is_avx512_bf16_supported')]
    if all(checks):
        try:
            return any(check() for check in checks)
        except Exception:
            pass
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])
    except OSError:
        return False
    return bool({'amx_bf16', 'avx512_bf16'} & set(flags))


def inference_weights(dtype, device_type):
    """The dtype generation, scoring and serving keep the matmul weights in, for a resolved dtype: bfloat16
    on any device and float16 on GPUs are real half-precision weights (half the bytes to read per token);
    float16 on CPU, which has no fast float16 matmuls, stays autocast over float32 weights; None = no cast.
    Training never casts: it keeps float32 master weights under autocast, as upstream."""
    if dtype == 'bfloat16' or (dtype == 'float16' and device_type != 'cpu'):
        return DTYPES[dtype]
    return None


def cast_matmul_weights(model, dtype):
    """Keep the weights of every matmul (each nn.Linear, so also lm_head and the token embedding tied to it)
    in dtype; LayerNorms and the position embedding stay float32. Run under autocast (autocast_ctx), the
    residual stream and the LayerNorms stay float32 and only the matmuls run in dtype, as with autocast
    over float32 weights; GPT.unembed makes the logits float32. Each matrix is stored (out, in)
    contiguous, nn.Linear's own layout, where CPU bfloat16 matmuls are fastest (a Hugging Face folder's
    Conv1D weights arrive transposed). Parameters keep their identity (only .data changes), so the
    embedding stays tied."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                for p in m.parameters(recurse=False):
                    p.data = p.data.to(dtype, memory_format=torch.contiguous_format)
    return model


def autocast_ctx(device_type, dtype):
    """Mixed precision where it applies: autocast to bfloat16/float16 on any device that asks for it;
    float32 and float64 run as they are (no autocast)."""
    if dtype in ('float32', 'float64'):
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=DTYPES[dtype])


def use_grad_scaler(device_type, dtype):
    """A GradScaler only for float16 on CUDA: bfloat16 has float32's range and needs none."""
    return device_type == 'cuda' and dtype == 'float16'


def should_compile(compile, device_type):
    """torch.compile where it helps: asked for, on CUDA, not on Windows (no Triton there).
    On CPU and MPS it costs minutes of compilation for little or no gain, so it is skipped."""
    if not compile:
        return False
    if device_type != 'cuda' or os.name == 'nt':
        print(f"note: compile=True ignored on {device_type}{' (Windows)' if os.name == 'nt' else ''}: "
              "torch.compile does not help there")
        return False
    return True


def read_text(value, setting='start'):
    """value itself, or the contents of the file it names as FILE:path
    (upstream's --start=FILE:prompt.txt)."""
    if not value.startswith('FILE:'):
        return value
    path = value[len('FILE:'):]
    if os.path.exists(path) and not os.path.isfile(path):  # /dev/zero would be read forever
        raise ValueError(f"{setting}={value!r}: {path!r} is not a regular file (a folder, device or pipe); "
                         "give a UTF-8 text file")
    try:
        with open(path, 'rb') as f:
            data = f.read()
        return data.decode('utf-8').replace('\r\n', '\n').replace('\r', '\n')  # as open(path, 'r') reads
    except OSError as e:
        raise ValueError(f"{setting}={value!r}: cannot read {path!r} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{setting}={value!r}: {path!r} is not UTF-8 text (byte {e.start:,} is "
                         f"0x{e.object[e.start]:02x}); {checks.encoding_fix(path, checks.head_of(path))}") from None


def encode_prompt(tok, start, block_size=None):
    """Token ids of a prompt given as text or FILE:path; at least one token. With block_size, a longer
    prompt keeps its last block_size tokens (what the model can see), and says so."""
    ids = tok.encode(read_text(start, 'start'))
    if not ids:
        raise ValueError("start is empty: the model needs at least one token to continue "
                         "(for example --start='<|endoftext|>')")
    if block_size and len(ids) > block_size:
        print(f"note: the prompt has {len(ids)} tokens; keeping the last block_size={block_size}")
        ids = ids[-block_size:]
    return ids


# -----------------------------------------------------------------------------
# checkpoints

CKPT, LAST = 'ckpt.pt', 'ckpt_last.pt'  # train.py's files: the best (or latest) state; the latest, when not the best


def no_checkpoint(path):
    """The error for a checkpoint that is not there, as one line. When train.py left only ckpt_last.pt
    beside it (with always_save_checkpoint=False it writes ckpt.pt when a val loss beats iteration 0's),
    it says so and gives the setting that loads that file."""
    folder = os.path.dirname(path) or '.'
    last = os.path.join(folder, LAST)
    if os.path.basename(path) == CKPT and os.path.isfile(last):
        return FileNotFoundError(
            f"no {CKPT} in {folder}: no val loss of that run beat its iteration 0's (or it stopped before "
            f"its first eval), so train.py kept only {LAST}, its latest state; load that with "
            f"--init_from={last}")
    return FileNotFoundError(f"no checkpoint at {path}: train one with train.py (it writes "
                             "out_dir/ckpt.pt), or set --out_dir to the folder that holds ckpt.pt")


def load_checkpoint(path, map_location='cpu'):
    """Read a nanoGPT checkpoint safely (weights_only=True) and check it has what a model needs.
    A zip-format file (torch.save's since torch 1.6) is memory-mapped, so only the tensors that are used
    are read: a training checkpoint's optimizer state, twice the model's size, is not unless train.py
    resumes. The model's tensors ('model', a LoRA run's 'lora') are copied out of the mapping here, so a
    model built from them holds no mapping of the file: upstream's train.py truncates and rewrites
    ckpt.pt in place, which would kill a process still mapping it (SIGBUS), e.g. serve.py beside a
    training run (docs/model.md). Not mapped on Windows, where a mapped file cannot be replaced."""
    if os.path.isdir(path):
        path = os.path.join(path, CKPT)
    if not os.path.exists(path):
        raise no_checkpoint(path)
    if not _torch_file(path):
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): torch.save "
                         "writes a complete zip archive (before torch 1.6, a pickle), and this file is "
                         "neither")
    try:
        # torch warns about the pickle protocol of damaged files: the error says it
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            mmap = os.name != 'nt' and map_location == 'cpu' and zipfile.is_zipfile(path)
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise checks.unpickling_error(path, e, 'torch checkpoint') from None
    except Exception as e:
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    # a LoRA run's checkpoint has 'lora' (adapters and the name of its base) instead of 'model'
    if not isinstance(ckpt, dict) or not ({'model', 'lora'} & set(ckpt)) or 'model_args' not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a nanoGPT checkpoint: expected keys 'model' and 'model_args', "
                         f"found {keys}")
    checks.check_model_args(ckpt['model_args'], path)  # a dict of sizes that make a GPT
    missing = [k for k in MODEL_ARGS if k != 'dropout' and k not in ckpt['model_args']]
    if missing:
        raise ValueError(f"{path}: model_args lacks {missing}")
    if 'model' in ckpt and not isinstance(ckpt['model'], dict):
        raise ValueError(f"{path}: 'model' is a {type(ckpt['model']).__name__}, not the weights (a dict of "
                         "tensors); the checkpoint is damaged: use another checkpoint")
    if mmap:
        for key in ('model', 'lora'):
            if key in ckpt:
                ckpt[key] = _copied(ckpt[key])
    return ckpt


def _copied(obj):
    """obj (dicts, lists, tensors) with every tensor copied into this process's memory."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _copied(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copied(v) for v in obj)
    return obj


def _torch_file(path):
    """Whether path starts like something torch.save writes: a zip archive, or a legacy pickle
    (0x80 PROTO)."""
    with open(path, 'rb') as f:
        head = f.read(4)
    return head[:1] == b'\x80' or (head.startswith(b'PK') and zipfile.is_zipfile(path))


def clean_state_dict(state_dict):
    """Strip the '_orig_mod.' prefix that a torch.compile'd model leaves on its keys."""
    return {k[len(UNWANTED_PREFIX):] if k.startswith(UNWANTED_PREFIX) else k: v
            for k, v in state_dict.items()}


def model_from_checkpoint(ckpt, dropout=None, path='checkpoint', merge=True):
    """Build the GPT a checkpoint describes, around the checkpoint's own tensors (nothing is initialised
    or copied: GPT.from_state_dict). The architecture comes from model_args; GELU from the top-level
    'gelu' key train.py writes (absent in upstream's checkpoints, which used exact GELU).
    A LoRA run's checkpoint: its base (checksum verified) with the adapters, merged unless merge=False."""
    if 'lora' in ckpt:  # nanoprobs/lora.py
        from nanoprobs import lora
        base = lora.Run.of_checkpoint(ckpt).base
        return lora.restore(base_model(base.location(), dropout), ckpt, path, merge)
    args = {k: ckpt['model_args'][k] for k in MODEL_ARGS if k in ckpt['model_args']}
    if dropout is not None:
        args['dropout'] = dropout
    sd = clean_state_dict(ckpt['model'])
    checks.check_args_fit_weights(args, sd, path)  # before building: edited sizes must not allocate
    config = GPTConfig(**args, gelu=ckpt.get('gelu', 'exact'))
    try:
        return GPT.from_state_dict(config, sd)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit model_args {args}: {state_dict_error(e)}") from None


def checkpoint_dict(model, optimizer=None, iter_num=0, best_val_loss=1e9, config=None, tokenizer=None,
                    **extra):
    """The checkpoint format upstream nanoGPT reads (plus top-level extras upstream ignores). tokenizer (a
    Tokenizer or its .record) is kept as plain data, so the checkpoint decodes without its data folder;
    without one, loaders look in the dataset folder as upstream does."""
    ckpt = {
        'model': clean_state_dict(model.state_dict()),
        'optimizer': optimizer.state_dict() if optimizer is not None else {},
        'model_args': model.model_args,
        'iter_num': iter_num,
        'best_val_loss': best_val_loss,
        'config': dict(config or {}),
        'gelu': model.config.gelu,
    }
    if tokenizer is not None:
        ckpt['tokenizer'] = tokenizer if isinstance(tokenizer, dict) else tokenizer.record
    ckpt.update(extra)
    return ckpt


# -----------------------------------------------------------------------------
# the one entry point

# -----------------------------------------------------------------------------
# the Hugging Face hub, checked once so that offline machines fail fast

def hub_offline():
    """True when the user asked the Hugging Face libraries to stay offline (HF_HUB_OFFLINE=1)."""
    return os.environ.get('HF_HUB_OFFLINE', '').strip().upper() in ('1', 'ON', 'YES', 'TRUE')


def hub_reachable(timeout=2.0):
    """Whether the hub (or the HTTPS proxy in the environment) accepts a TCP connection within timeout
    seconds. One quick check: transformers itself retries for ~30 s before it gives up offline.
    Run in a thread, so that a name lookup with no DNS server answering cannot take longer."""
    import socket
    import threading
    from urllib.parse import urlparse
    proxy = os.environ.get('HTTPS_PROXY') or os.environ.get('https_proxy')
    url = urlparse(proxy or os.environ.get('HF_ENDPOINT') or 'https://huggingface.co')
    host, port = url.hostname, url.port or (80 if url.scheme == 'http' else 443)
    ok = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def hub_cached(name):
    """The local folder of a hub model in the Hugging Face cache (config.json present), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
        path = try_to_load_from_cache(name, 'config.json')
    except Exception:
        return None
    return os.path.dirname(path) if isinstance(path, str) else None


@dataclass
class Loaded:
    model: GPT
    tok: Tokenizer
    device: str          # e.g. 'cpu', 'cuda', 'cuda:1', 'mps'
    device_type: str     # 'cpu' | 'cuda' | 'mps'
    dtype: str           # 'float32' | 'bfloat16' | 'float16' | 'float64'
    ctx: object          # autocast context (or nullcontext) to run the model under
    source: str          # what was loaded, for printing and result files


def describe_init_from(init_from, out_dir='out'):
    """('resume' | 'gpt2' | 'hf' | 'ckpt', path or name) for an init_from value, or a clear error."""
    if init_from == 'resume':
        return 'ckpt', os.path.join(out_dir, 'ckpt.pt')
    if init_from in GPT2_SIZES:
        return 'gpt2', init_from
    if os.path.isdir(init_from):
        if os.path.exists(os.path.join(init_from, 'config.json')):
            return 'hf', init_from
        if os.path.exists(os.path.join(init_from, CKPT)):
            return 'ckpt', os.path.join(init_from, CKPT)
        if os.path.exists(os.path.join(init_from, LAST)):
            raise no_checkpoint(os.path.join(init_from, CKPT))
        raise ValueError(f"init_from={init_from!r} is a folder with neither config.json (Hugging Face model) "
                         "nor ckpt.pt (nanoGPT checkpoint)")
    if os.path.isfile(init_from):
        return 'ckpt', init_from
    raise ValueError(f"unknown init_from={init_from!r}: use 'resume' (with --out_dir), one of "
                     f"{', '.join(GPT2_SIZES)}, a Hugging Face model folder, or a checkpoint file")


def pretrained_model(kind, where, dropout=None):
    """A GPT with Hugging Face GPT-2 weights: kind 'gpt2' (a hub name) or 'hf' (a local folder). Offline,
    a hub model comes from the Hugging Face cache or fails at once, without transformers' retries; every
    failure is one LoadError naming the fix."""
    src = where
    if kind == 'gpt2' and not hub_offline() and not hub_reachable():
        src = hub_cached(where)  # no network: the cached copy, if any
        if src is None:
            raise LoadError(f"cannot download {where!r}: no network (the Hugging Face hub did not "
                            "answer within 2 s) and it is not in the Hugging Face cache. Run once with "
                            "network, or give a local Hugging Face GPT-2 folder (config.json + weights) "
                            "as --init_from=path")
    try:
        return GPT.from_pretrained(src, dict(dropout=dropout) if dropout is not None else None)
    except OSError as e:  # no network, no such hub model, a folder without weights, an unreadable file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip('.')
        hint = ('GPT-2 weights download from the Hugging Face hub on first use; offline, '
                if kind == 'gpt2' else '')
        raise LoadError(f"could not load {where!r}: {first}. {hint}"
                        "give a local Hugging Face GPT-2 folder (config.json + weights) "
                        "as --init_from=path") from None


def base_model(init_from, dropout=None):
    """The model a new run starts from (a hub name, a Hugging Face folder or a checkpoint): a LoRA run's
    base."""
    kind, where = describe_init_from(init_from)
    if kind == 'ckpt':
        return model_from_checkpoint(load_checkpoint(where), dropout, where)
    return pretrained_model(kind, where, dropout)


def load_model(init_from='resume', out_dir='out', device='auto', dtype='auto', compile=False, dropout=None,
               seed=None, eval_mode=True):
    """Load a model for inference (or training, with eval_mode=False) and everything around it."""
    device = resolve_device(device)
    device_type = device_type_of(device)
    dtype = resolve_dtype(dtype, device_type)
    if seed is not None:
        torch.manual_seed(seed)
    kind, where = describe_init_from(init_from, out_dir)
    ckpt = None
    if kind == 'ckpt':
        ckpt = load_checkpoint(where, map_location='cpu')
        model = model_from_checkpoint(ckpt, dropout, where)
        tok = tokenizer_for(ckpt, where=where)
    else:
        model = pretrained_model(kind, where, dropout)
        tok = gpt2_tokenizer()
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{where}: the model has vocab_size {model.config.vocab_size} but its tokenizer "
                         f"({tok.name}) has {tok.vocab_size} tokens; "
                         "the checkpoint and the data do not belong together")
    checks.check_finite(model, where)  # NaN weights have no probabilities to show: one line, not NaN output
    if dtype == 'float64':
        model.double()  # exact reference computations; no autocast for float64
    model.to(device)
    if eval_mode:
        model.eval()
        half = inference_weights(dtype, device_type)
        if half is not None:
            cast_matmul_weights(model, half)
    if should_compile(compile, device_type):
        model = torch.compile(model)
    del ckpt  # the optimizer state and the second copy of the weights are not kept while the model runs
    return Loaded(model, tok, device, device_type, dtype, autocast_ctx(device_type, dtype), where)
