"""
The Hugging Face GPT-2 weight mapping: transformers' GPT2LMHeadModel to our GPT and back.

GPT.from_pretrained() (model.py) reads a GPT2LMHeadModel through config_args() and copy_weights();
to_hf() builds one from our GPT (GPT.to_hf, tools/export_hf.py). The two directions share the rules below.
transformers itself is imported by the callers, only when needed (it is heavy).
"""

import torch

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


def config_args(c, name):
    """GPTConfig arguments (all but dropout) for a transformers GPT2Config c; ValueError naming the
    model and the key for a config this GPT cannot compute."""
    unsupported = {
        # tanh GELU (two names) | exact GELU
        'activation_function': (c.activation_function, ('gelu_new', 'gelu_pytorch_tanh', 'gelu')),
        'layer_norm_epsilon': (c.layer_norm_epsilon, (1e-5,)),
        'scale_attn_weights': (c.scale_attn_weights, (True,)),
        'scale_attn_by_inverse_layer_idx': (c.scale_attn_by_inverse_layer_idx, (False,)),
    }
    for key, (val, ok) in unsupported.items():
        if val not in ok:
            raise ValueError(f"{name}: config.json has {key}={val!r}; this GPT supports {ok}")
    gelu = 'exact' if c.activation_function == 'gelu' else 'tanh'
    return dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.n_positions,
                vocab_size=c.vocab_size, bias=True, gelu=gelu)


def copy_weights(model, src, name):
    """Copy the weights of src (a GPT2LMHeadModel) into model (our GPT of the same shape)."""
    sd = model.state_dict()
    sd_hf = {k: v for k, v in src.state_dict().items() if not k.endswith(MASKS)}
    missing = set(sd) - set(sd_hf)
    if missing:
        raise ValueError(f"{name}: weights lack {sorted(missing)[:5]}; is it a GPT-2 model?")
    with torch.no_grad():
        for k in sd:
            w = sd_hf[k].t() if k.endswith(CONV1D) else sd_hf[k]
            assert w.shape == sd[k].shape, f"{k}: {tuple(w.shape)} != {tuple(sd[k].shape)}"
            sd[k].copy_(w)


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
