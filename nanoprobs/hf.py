"""
The Hugging Face GPT-2 format: read a model folder (config.json + weights) into our GPT's names, and back.

Reading needs no transformers: config.json is plain JSON (transformers' GPT2Config defaults fill what it
leaves out) and the weights are memory-mapped from model.safetensors (or read from pytorch_model.bin with
torch.load(weights_only=True)), so nothing is built twice and nothing is initialised only to be
overwritten. GPT.from_pretrained() (model.py) reads through read_folder(); to_hf() builds a transformers
GPT2LMHeadModel from our GPT (GPT.to_hf, tools/export_hf.py). The two directions share the rules below.
Hub names ('gpt2', ...) are downloaded into the Hugging Face cache by huggingface_hub (hub_folder).
"""

import json
import os
import pickle

import torch

from nanoprobs import checks

# the GPT-2 models on the Hugging Face hub, by name
GPT2_SIZES = {
    'gpt2':        dict(n_layer=12, n_head=12, n_embd=768),   # 124M params
    'gpt2-medium': dict(n_layer=24, n_head=16, n_embd=1024),  # 350M params
    'gpt2-large':  dict(n_layer=36, n_head=20, n_embd=1280),  # 774M params
    'gpt2-xl':     dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M params
}

# Hugging Face's GPT-2 keeps these four matrices as Conv1D: transposed relative to nn.Linear
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
MASKS = ('.attn.bias', '.attn.masked_bias')  # causal-mask buffers in older transformers, not weights
ACTIVATION = {'tanh': 'gelu_new', 'exact': 'gelu'}  # our GPTConfig.gelu -> transformers' activation_function
# transformers' GPT2Config defaults, for the keys a config.json may leave out
CONFIG_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                       activation_function='gelu_new', layer_norm_epsilon=1e-5, scale_attn_weights=True,
                       scale_attn_by_inverse_layer_idx=False, tie_word_embeddings=True,
                       add_cross_attention=False)
# the weight files of a folder, in the order they are looked for
SAFETENSORS, SAFETENSORS_INDEX = 'model.safetensors', 'model.safetensors.index.json'
TORCH_BIN, TORCH_BIN_INDEX = 'pytorch_model.bin', 'pytorch_model.bin.index.json'
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)


def read_config(folder):
    """config.json of a Hugging Face model folder as a dict, with GPT2Config's defaults for what it leaves
    out. OSError if it cannot be read, ValueError if it is not a JSON object."""
    path = os.path.join(folder, 'config.json')
    with open(path, encoding='utf-8') as f:
        try:
            c = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(c, dict):
        raise ValueError(f"{path} holds a JSON {type(c).__name__}, not the object of a model's settings")
    return {**CONFIG_DEFAULTS, **c}


def config_args(c, name):
    """GPTConfig arguments (all but dropout) for a GPT-2 config c (config.json as a dict, read_config);
    ValueError naming the model and the key for a config this GPT cannot compute."""
    c = {**CONFIG_DEFAULTS, **c}
    unsupported = {
        'model_type': (c.get('model_type', 'gpt2'), ('gpt2',)),
        # tanh GELU (two names) | exact GELU
        'activation_function': (c['activation_function'], ('gelu_new', 'gelu_pytorch_tanh', 'gelu')),
        'layer_norm_epsilon': (c['layer_norm_epsilon'], (1e-5,)),
        'scale_attn_weights': (c['scale_attn_weights'], (True,)),
        'scale_attn_by_inverse_layer_idx': (c['scale_attn_by_inverse_layer_idx'], (False,)),
        'n_inner': (c['n_inner'], (None, 4 * c['n_embd'])),  # the MLP is 4 x n_embd wide
        'tie_word_embeddings': (c['tie_word_embeddings'], (True,)),  # lm_head is the token embedding
        'add_cross_attention': (c['add_cross_attention'], (False,)),
    }
    for key, (val, ok) in unsupported.items():
        if val not in ok:
            raise ValueError(f"{name}: config.json has {key}={val!r}; this GPT supports {ok}")
    gelu = 'exact' if c['activation_function'] == 'gelu' else 'tanh'
    return dict(n_layer=c['n_layer'], n_head=c['n_head'], n_embd=c['n_embd'], block_size=c['n_positions'],
                vocab_size=c['vocab_size'], bias=True, gelu=gelu)


def weight_files(folder):
    """The weight file(s) of a model folder: model.safetensors, else its shards (model.safetensors.index.json),
    else pytorch_model.bin (or its shards). OSError naming what was looked for if there is none."""
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        if not name.endswith('.index.json'):
            return [path]
        with open(path, encoding='utf-8') as f:
            try:
                shards = json.load(f)['weight_map'].values()
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise ValueError(f"{path} is not a shard index (a JSON object with a 'weight_map')") from None
        return [os.path.join(folder, s) for s in sorted(set(shards))]
    raise OSError(f"{folder} has config.json but no weights: expected {SAFETENSORS} (or {TORCH_BIN}) beside it")


def read_weights(path):
    """The tensors of one weight file, read once into this process's memory: a safetensors file, or a
    pytorch_model.bin through torch.load(weights_only=True). Nothing keeps the file mapped, so saving
    over it in place (save_pretrained does) cannot kill a process that loaded it (docs/model.md)."""
    import zipfile
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location='cpu', weights_only=True, mmap=zipfile.is_zipfile(path))
        return {k: v.clone() for k, v in sd.items()}
    except pickle.UnpicklingError as e:  # code in the pickle, refused by weights_only (never suggest otherwise)
        raise checks.unpickling_error(path, e, 'weight file') from None
    except Exception as e:  # a truncated or damaged file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path} is not a readable weight file (truncated or corrupt?): {why}") from None


def to_ours(sd_hf):
    """Our GPT's state dict from a Hugging Face GPT-2 one: the 'transformer.' prefix added where a file
    leaves it out (the hub's original GPT-2 files do), the Conv1D matrices transposed (as views: no copy;
    nn.Linear then computes x @ W exactly as Conv1D does), mask buffers dropped, and lm_head.weight taken
    from the tied token embedding when the file has no copy of it."""
    sd = {}
    for k, v in sd_hf.items():
        if k.endswith(MASKS):
            continue
        if not k.startswith(('transformer.', 'lm_head.')):
            k = 'transformer.' + k
        sd[k] = v.t() if k.endswith(CONV1D) else v
    if 'lm_head.weight' not in sd and 'transformer.wte.weight' in sd:
        sd['lm_head.weight'] = sd['transformer.wte.weight']
    return sd


def read_folder(folder, name=None):
    """(GPTConfig arguments but dropout, our state dict) of a local Hugging Face GPT-2 folder: config.json
    and memory-mapped weights, with no transformers model built. name: what error messages call it."""
    args = config_args(read_config(folder), name or folder)
    sd = {}
    for path in weight_files(folder):
        sd.update(read_weights(path))
    return args, to_ours(sd)


def hub_folder(name):
    """The local folder (in the Hugging Face cache) of a hub model's config.json and weights, downloaded by
    huggingface_hub on first use; offline (HF_HUB_OFFLINE=1) the cached copy. OSError if it cannot be had."""
    from huggingface_hub import hf_hub_download
    try:
        folder = os.path.dirname(hf_hub_download(name, 'config.json'))
        missing = None
        for weights in (SAFETENSORS, TORCH_BIN):
            try:
                hf_hub_download(name, weights)
                return folder
            except Exception as e:  # this repository has no such file: try the next
                if not type(e).__name__.endswith('EntryNotFoundError'):
                    raise
                missing = e
        raise missing
    except OSError:
        raise
    except Exception as e:  # huggingface_hub's errors that are not OSErrors
        raise OSError(str(e)) from None


def to_hf(model, eot=None):
    """The inverse of GPT.from_pretrained: a transformers GPT2LMHeadModel computing the same function as
    model (our GPT). bias=False becomes zero biases (the same function); vocab_size stays the model's."""
    from transformers import GPT2Config, GPT2LMHeadModel
    c = model.config
    config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, activation_function=ACTIVATION[c.gelu], resid_pdrop=c.dropout,
                        embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=1e-5,
                        bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=True)
    hf = GPT2LMHeadModel(config)
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    sd = {}
    for k, v in hf.state_dict().items():
        if k.endswith(MASKS):
            continue
        if k in ours:
            w = ours.pop(k)
            sd[k] = w.t() if k.endswith(CONV1D) else w
        elif k.endswith('.bias') and not c.bias:
            sd[k] = torch.zeros_like(v)
        else:
            raise ValueError(f"the model has no weight for {k}")
        if sd[k].shape != v.shape:
            raise ValueError(f"{k}: {tuple(sd[k].shape)} does not fit Hugging Face's {tuple(v.shape)}")
    if ours:
        raise ValueError(f"weights with no place in GPT2LMHeadModel: {sorted(ours)[:5]}")
    hf.load_state_dict(sd, strict=False)
    return hf.eval()
