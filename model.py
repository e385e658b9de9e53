"""
The GPT language model (nanoGPT's, faithful to GPT-2) and the math of generating and scoring with it.

Nothing here reads files, draws, or parses arguments: see load.py, plots.py and the scripts.

What this file adds to upstream nanoGPT's model.py:
- GELU choice: GPT-2 was trained with the tanh approximation ('tanh', what transformers calls
  gelu_new); upstream nanoGPT uses exact GELU ('exact'), and checkpoints trained that way keep it.
- GPT.from_pretrained() also takes a local Hugging Face GPT-2 directory.
- A KV cache for fast incremental decoding.
- generate() returns, for every sample, the log-probability of every token it produced, under two
  distributions (see `Sample`), and optionally the top-k candidates of every step (see `Step`).
- generate(fixed_response=...) / score() compute the same for a given response in one forward pass.

Two distributions, always named the same way:
- the *model* distribution: softmax(logits), temperature 1, no top-k/top-p: what the model believes.
- the *sampling* distribution: softmax(logits / temperature) after top-k / top-p filtering: what the
  token was actually drawn from. temperature=0 means greedy (all mass on the argmax).
Log-probabilities are natural logs, computed and summed in float64.
"""

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F


class LayerNorm(nn.Module):
    """ LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False """

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size.

    pos is the number of cached positions; the next token fed to the model gets position `pos`."""

    def __init__(self, config, batch_size, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, hs)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0

    def update(self, layer, k, v):
        """Store k, v (B, nh, T, hs) of `layer` at the current position; return all cached (B, nh, pos+T, hs)."""
        T = k.size(2)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]

    def reorder(self, index):
        """Keep batch rows `index` (B',): beam search moves each beam's history along with it.
        Only the filled positions are copied (the buffers are preallocated to block_size)."""
        p = self.pos
        for name in ('k', 'v'):
            old = getattr(self, name)
            if old.size(1) == len(index):
                old[:, :, :, :p] = old[:, index, :, :p]  # the right side is a copy: safe in place
            else:  # the number of rows changes (one prompt row becomes num_beams beams)
                new = old.new_empty(old.shape[:1] + (len(index),) + old.shape[2:])
                new[:, :, :, :p] = old[:, index, :, :p]
                setattr(self, name, new)


@dataclass
class Capture:
    """Pass to GPT.forward(capture=...) to record what happens inside (for the inspection scripts).

    attn[l]:  (B, nh, T, T_total) attention weights of layer l (rows sum to 1, zero above the diagonal)
    resid[l]: (B, T, C) the residual stream entering block l; resid[n_layer] is the output of the
              last block, before ln_f."""
    attn: list = field(default_factory=list)
    resid: list = field(default_factory=list)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # regularization
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x, cache=None, layer=0, capture=None):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.update(layer, k, v)  # (B, nh, past+T, hs)
        Tk = k.size(2)

        if capture is not None:
            # explicit attention, so the weights can be returned; same math as the fused kernel
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, Tk)
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(diagonal=past)
            att = att.masked_fill(~mask, float('-inf')).softmax(dim=-1)
            capture.attn.append(att)
            y = self.attn_dropout(att) @ v  # (B, nh, T, hs)
        elif past == 0 or T == 1:
            # prefill (causal) or one new token (sees every cached position: no mask needed)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0,
                                               is_causal=(T > 1))
        else:
            # several new tokens after a cached prefix: the causal mask is offset by `past`
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2's weights were trained with the tanh approximation; upstream nanoGPT uses exact GELU
        self.gelu = nn.GELU(approximate='tanh' if config.gelu == 'tanh' else 'none')
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0, capture=None):
        x = x + self.attn(self.ln_1(x), cache, layer, capture)
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2 vocab_size of 50257, padded up to nearest multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2. False: a bit better and faster
    gelu: str = 'exact'  # 'exact' (upstream nanoGPT) or 'tanh' (GPT-2). Never part of a checkpoint's model_args

    def __post_init__(self):
        if self.gelu not in ('exact', 'tanh'):
            raise ValueError(f"GPTConfig.gelu must be 'exact' or 'tanh', got {self.gelu!r}")


# checkpoint['model_args'] holds exactly these keys, so upstream's GPTConfig(**model_args) keeps working
MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')

# Hugging Face's GPT-2 keeps these four matrices as Conv1D: transposed relative to nn.Linear
HF_CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
HF_MASKS = ('.attn.bias', '.attn.masked_bias')  # causal-mask buffers in older transformers, not weights
HF_ACTIVATION = {'tanh': 'gelu_new', 'exact': 'gelu'}  # our GPTConfig.gelu -> transformers' activation_function

GPT2_SIZES = {
    'gpt2':        dict(n_layer=12, n_head=12, n_embd=768),   # 124M params
    'gpt2-medium': dict(n_layer=24, n_head=16, n_embd=1024),  # 350M params
    'gpt2-large':  dict(n_layer=36, n_head=20, n_embd=1280),  # 774M params
    'gpt2-xl':     dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M params
}


# -----------------------------------------------------------------------------
# What generate() and score() return

@dataclass
class Step:
    """One generation (or scoring) step of one sample: the model's top-k candidates and the chosen token.

    Candidates are ranked by the model distribution; ranks are 1-based. `chosen` may lie outside the
    top k (then chosen_rank > k). Numbers are kept as float64 natural logs (a probability can underflow;
    print it with format_prob); the *_prob properties give the probabilities. Entropies are in nats."""
    top_ids: list            # k candidate token ids, most likely first
    top_logprobs: list       # their log-probabilities under the model distribution
    top_sample_logprobs: list  # ... under the sampling distribution (-inf: top-k/top-p excluded it)
    chosen: int              # the token taken (sampled, or forced by fixed_response)
    chosen_logprob: float    # under the model distribution
    chosen_sample_logprob: float  # under the sampling distribution
    chosen_rank: int         # 1 + number of tokens the model found strictly more likely
    entropy: float           # of the model distribution
    sample_entropy: float    # of the sampling distribution

    @property
    def top_probs(self):
        return [math.exp(x) for x in self.top_logprobs]

    @property
    def top_sample_probs(self):
        return [math.exp(x) for x in self.top_sample_logprobs]

    @property
    def chosen_prob(self):
        return math.exp(self.chosen_logprob)

    @property
    def chosen_sample_prob(self):
        return math.exp(self.chosen_sample_logprob)


class _Tokens:
    """What every result with a prompt, its tokens and their log-probs (model distribution) offers."""

    @property
    def ids(self):
        return self.prompt + self.tokens

    @property
    def logprob(self):
        """Total log-probability (float64 sum of the per-token logs)."""
        return float(self.logprobs.sum())

    @property
    def prob(self):
        """exp(logprob): may underflow to 0.0, so print format_prob(logprob) instead."""
        return math.exp(self.logprob)


@dataclass
class Sample(_Tokens):
    """One sequence's result from GPT.generate() or GPT.score().

    logprobs[i] is log p(tokens[i] | prompt, tokens[:i]) under the model distribution; sample_logprobs
    under the sampling distribution (with fixed_response, the distribution sampling would have used;
    -inf where top-k/top-p would have excluded the token). Both are float64 CPU tensors.
    Totals are float64 sums of logs; `prob` may underflow to 0.0 for long responses, so print
    probabilities with format_prob(logprob), which never shows a silent 0."""
    prompt: list            # prompt token ids
    tokens: list            # generated (or forced) token ids, after the prompt
    logprobs: torch.Tensor  # (T,) float64, model distribution
    sample_logprobs: torch.Tensor  # (T,) float64, sampling distribution
    ranks: torch.Tensor = None  # (T,) int64: 1-based rank of each token under the model distribution
    top1: torch.Tensor = None   # (T,) int64: the model's most likely token at each position (greedy's choice)
    steps: list = None      # list[Step], one per token, when generate(details=k) asked for them
    stopped: bool = False   # generation ended at stop_token (which is included in tokens)

    @property
    def sample_logprob(self):
        return float(self.sample_logprobs.sum())

    @property
    def sample_prob(self):
        return math.exp(self.sample_logprob)


def format_prob(logprob, digits=4):
    """A probability given by its natural log, as text, without float64 underflow.

    format_prob(-2.3) -> '0.1003'; format_prob(-1000) -> '5.076e-435' (exp(-1000) is 0.0 in float64)."""
    if logprob == float('-inf'):
        return '0'
    if math.isnan(logprob):
        return 'nan'
    if logprob > -6.9:  # p > ~0.001: plain decimal
        return f"{math.exp(logprob):.{digits}f}"
    return _sci(logprob / math.log(10), digits)


def format_ratio(logratio, digits=3):
    """exp(logratio) as a factor, for any logratio in nats: '×27.6', '×0.0821', '×3.20e-05', '×1.05e+20'."""
    if math.isnan(logratio):
        return '×nan'
    if abs(logratio) < 4 * math.log(10):
        return f"×{math.exp(logratio):.{digits}g}"
    return '×' + _sci(logratio / math.log(10), digits)


def _sci(log10, digits):
    """10**log10 in scientific notation with `digits` significant digits, for any log10 (no overflow)."""
    exp10 = math.floor(log10)
    mant = 10 ** (log10 - exp10)
    if round(mant, digits - 1) >= 10:  # 9.9996 rounds up to 10.000: carry into the exponent
        mant, exp10 = mant / 10, exp10 + 1
    return f"{mant:.{digits - 1}f}e{exp10:+03d}"


# -----------------------------------------------------------------------------
# Sampling: one small function and its distribution

def f64(x):
    """x as float64 for log-space math (no copy if it already is). Apple MPS has no float64, so there
    the values move to the CPU."""
    return x.to('cpu', torch.float64) if x.device.type == 'mps' else x.double()


def make_generator(device, seed):
    """A seeded torch.Generator for generate(): on the model's device, on the CPU for MPS (see f64)."""
    dev = torch.device(device)
    return torch.Generator(device='cpu' if dev.type == 'mps' else dev).manual_seed(seed)


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Raise ValueError naming the setting if a sampling value makes no sense."""
    if temperature is None or not isinstance(temperature, (int, float)) or math.isnan(temperature) \
            or temperature < 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be an int >= 0 (0 or None = off), got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or math.isnan(top_p)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 or None = off), got {top_p!r}")


def is_model_distribution(temperature=1.0, top_k=None, top_p=None):
    """True when these settings sample from the model distribution itself (T=1, no top-k, no top-p)."""
    return temperature == 1 and not top_k and (top_p is None or top_p >= 1)


def sampling_logprobs(logits, temperature=1.0, top_k=None, top_p=None):
    """Log-probabilities (float64) of the sampling distribution for logits (..., V).

    temperature 0 = greedy (log 1 on the argmax, -inf elsewhere); top_k 0/None = off (clamped to V);
    top_p 1/None = off, else keep the smallest set of most likely tokens whose mass reaches top_p."""
    logits = f64(logits)
    if temperature == 0:
        lp = torch.full_like(logits, float('-inf'))
        return lp.scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)
    logits = logits / temperature
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[..., [-1]], float('-inf'))
    lp = logits.log_softmax(-1)
    if top_p is not None and top_p < 1:
        sorted_lp, order = lp.sort(-1, descending=True)
        cum = sorted_lp.exp().cumsum(-1)
        drop = (cum - sorted_lp.exp()) >= top_p  # mass before this token already reaches top_p
        drop = torch.zeros_like(drop).scatter(-1, order, drop)  # back to vocabulary order
        lp = lp.masked_fill(drop, float('-inf')).log_softmax(-1)
    return lp


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token id per row of logits (B, V). Returns (ids (B,), sampling log-probs (B, V) float64)."""
    lp = sampling_logprobs(logits, temperature, top_k, top_p)
    if temperature == 0:
        return lp.argmax(-1), lp
    # inverse-CDF draw: the first token whose cumulative probability exceeds a uniform u. Same
    # distribution as torch.multinomial, ~10x cheaper on CPU over a 50k vocabulary; a token of
    # probability 0 is never drawn (its CDF step is empty)
    cdf = lp.exp().cumsum(-1)  # (B, V)
    u = torch.rand(cdf.size(0), 1, generator=generator, dtype=cdf.dtype, device=cdf.device)  # (B, 1)
    u = torch.minimum(u * cdf[:, -1:], cdf[:, -1:] * (1 - 1e-12))  # never at or past the total
    return torch.searchsorted(cdf, u, right=True).squeeze(-1), lp


def entropy(lp):
    """Entropy in nats of the distributions whose log-probs are lp (..., V); 0 log 0 counts as 0."""
    return (-(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(-1)).clamp_min(0.0)


def _steps(model_lp, sample_lp, chosen, k):
    """Per-row Step records from log-probs (N, V) float64 of both distributions and chosen ids (N,)."""
    top_lp, top_ids = model_lp.topk(min(k, model_lp.size(-1)), dim=-1)  # (N, k)
    chosen_lp = model_lp.gather(-1, chosen[:, None])  # (N, 1)
    rank = (model_lp > chosen_lp).sum(-1) + 1  # (N,)
    cols = [top_ids, top_lp, sample_lp.gather(-1, top_ids), chosen, chosen_lp[:, 0],
            sample_lp.gather(-1, chosen[:, None])[:, 0], rank, entropy(model_lp), entropy(sample_lp)]
    cols = [c.cpu().tolist() for c in cols]
    return [Step(*row) for row in zip(*cols)]


# -----------------------------------------------------------------------------

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2

        # init all weights
        self.apply(self._init_weights)
        # apply special scaled init to the residual projections, per GPT-2 paper
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @property
    def model_args(self):
        """The checkpoint's model_args: exactly upstream's keys, nothing else."""
        return {k: getattr(self.config, k) for k in MODEL_ARGS}

    def get_num_params(self, non_embedding=True):
        """Number of parameters; the position embeddings are subtracted by default (the token
        embeddings stay: they double as the output layer)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx, cache=None, capture=None):
        """Final hidden states (B, T, C), after ln_f, of idx (B, T); lm_head turns them into logits.
        With a cache, idx holds the tokens after cache.pos and their keys/values are appended."""
        b, t = idx.size()
        start = cache.pos if cache is not None else 0
        assert start + t <= self.config.block_size, \
            f"Cannot forward sequence of length {start + t}, block size is only {self.config.block_size}"
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)  # (t,)

        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (b, t, n_embd)
        for i, block in enumerate(self.transformer.h):
            if capture is not None:
                capture.resid.append(x)
            x = block(x, cache, i, capture)
        if capture is not None:
            capture.resid.append(x)
        if cache is not None:
            cache.pos += t
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, cache=None, all_logits=False, capture=None):
        """idx (B, T) -> (logits, loss), as upstream: logits (B, T, V) with targets or all_logits,
        else only for the last position (B, 1, V)."""
        x = self.hidden(idx, cache, capture)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            # inference-time mini-optimization: only forward the lm_head on the very last position
            logits = self.lm_head(x if all_logits else x[:, [-1], :])
            loss = None
        return logits, loss

    def crop_block_size(self, block_size):
        # model surgery to decrease the block size if necessary
        # e.g. we may load the GPT2 pretrained model checkpoint (block size 1024)
        # but want to use a smaller block size for some smaller, simpler model
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @classmethod
    def from_pretrained(cls, model_type, override_args=None):
        """GPT-2 weights through transformers: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' from the
        Hugging Face hub, or a local directory holding any GPT-2-architecture model (config.json +
        weights). The model gets GPT-2's tanh GELU, so its logits match transformers'."""
        override_args = override_args or {}
        assert all(k == 'dropout' for k in override_args), "only dropout can be overridden"
        from transformers import GPT2LMHeadModel  # heavy: imported only when needed

        hf = GPT2LMHeadModel.from_pretrained(model_type)
        c = hf.config
        unsupported = {
            'activation_function': (c.activation_function, ('gelu_new', 'gelu_pytorch_tanh', 'gelu')),  # tanh | exact
            'layer_norm_epsilon': (c.layer_norm_epsilon, (1e-5,)),
            'scale_attn_weights': (c.scale_attn_weights, (True,)),
            'scale_attn_by_inverse_layer_idx': (c.scale_attn_by_inverse_layer_idx, (False,)),
        }
        for key, (val, ok) in unsupported.items():
            if val not in ok:
                raise ValueError(f"{model_type}: config.json has {key}={val!r}; this GPT supports {ok}")
        config = GPTConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.n_positions,
                           vocab_size=c.vocab_size, bias=True, dropout=override_args.get('dropout', 0.0),
                           gelu='exact' if c.activation_function == 'gelu' else 'tanh')
        model = cls(config)
        sd = model.state_dict()
        sd_hf = {k: v for k, v in hf.state_dict().items() if not k.endswith(HF_MASKS)}
        missing = set(sd) - set(sd_hf)
        if missing:
            raise ValueError(f"{model_type}: weights lack {sorted(missing)[:5]}; is it a GPT-2 model?")
        with torch.no_grad():
            for k in sd:
                w = sd_hf[k].t() if k.endswith(HF_CONV1D) else sd_hf[k]
                assert w.shape == sd[k].shape, f"{k}: {tuple(w.shape)} != {tuple(sd[k].shape)}"
                sd[k].copy_(w)
        return model

    def to_hf(self, eot=None):
        """The inverse of from_pretrained: a transformers GPT2LMHeadModel computing the same function.
        bias=False becomes zero biases (the same function); vocab_size stays the model's."""
        from transformers import GPT2Config, GPT2LMHeadModel
        c = self.config
        config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                            n_head=c.n_head, activation_function=HF_ACTIVATION[c.gelu], resid_pdrop=c.dropout,
                            embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=1e-5,
                            bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=True)
        hf = GPT2LMHeadModel(config)
        ours = {k: v.detach().float().cpu() for k, v in self.state_dict().items()}
        sd = {}
        for k, v in hf.state_dict().items():
            if k.endswith(HF_MASKS):
                continue
            if k in ours:
                w = ours.pop(k)
                sd[k] = w.t() if k.endswith(HF_CONV1D) else w
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

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None):
        """AdamW with weight decay on every 2-D tensor (matmuls, embeddings), none on biases and norms.
        fused: None = fused on CUDA, foreach elsewhere; True/False to choose (train.py asks for the fused
        CPU kernel where PyTorch has one, several times faster than foreach there)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        nodecay = [p for p in params if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay},
                  {'params': nodecay, 'weight_decay': 0.0}]
        print(f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters")
        print(f"num non-decayed parameter tensors: {len(nodecay)}, with {sum(p.numel() for p in nodecay):,} parameters")
        # fused AdamW on CUDA; elsewhere foreach (one kernel per group rather than per tensor)
        if fused is None:
            fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        extra = dict(fused=True) if fused else dict(foreach=True)
        print(f"using fused AdamW: {fused}")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def estimate_mfu(self, fwdbwd_per_iter, dt):
        """ estimate model flops utilization (MFU) in units of A100 bfloat16 peak FLOPS """
        N = self.get_num_params()
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return flops_per_iter * (1.0 / dt) / 312e12  # A100 GPU bfloat16 peak flops is 312 TFLOPS

    # -------------------------------------------------------------------------
    # Generation and scoring

    def _next_logits(self, idx, cache):
        """Logits (B, V) for the token after idx (B, L), the context upstream's generate would use:
        the last block_size tokens at positions 0..block_size-1. Within block_size only the tokens
        not yet in the cache are fed; past it, absolute positions shift every step, so the cropped
        window is recomputed (exactly what upstream does every step)."""
        L, bs = idx.size(1), self.config.block_size
        if cache is None or L > bs:
            return self(idx[:, -bs:])[0][:, -1, :]
        return self(idx[:, cache.pos:], cache=cache)[0][:, -1, :]

    @torch.inference_mode()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, fixed_response=None,
                 stop_token=None, details=0, generator=None, use_cache=True):
        """Continue each row of idx (LongTensor (B, T)) and return one `Sample` per row.

        temperature: 0 = greedy; top_k: 0/None = off; top_p: 1/None = off (nucleus sampling).
        fixed_response: a list of token ids (or one list per row) to force instead of sampling;
            scored in one forward pass (see score()); max_new_tokens is then ignored.
        stop_token: end a row once it produces this id (e.g. 50256, <|endoftext|>); it is included.
        details: k > 0 records a `Step` (top-k candidates, chosen token and rank) per token.
        generator: a torch.Generator for reproducible draws (make_generator(device, seed) puts it where
            the draws happen); use_cache=False recomputes the whole
            context every step, as upstream does (the reference the KV cache is tested against).
        Most likely you'll want the model in eval() mode."""
        check_sampling(temperature, top_k, top_p)
        if not torch.is_tensor(idx) or idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"idx must be a (batch, time) tensor with at least one token, got "
                             f"{tuple(idx.shape) if torch.is_tensor(idx) else type(idx).__name__}")
        if fixed_response is not None:
            if torch.is_tensor(fixed_response):
                fixed_response = fixed_response.tolist()
            B = idx.size(0)
            rows = fixed_response if fixed_response and isinstance(fixed_response[0], (list, tuple)) \
                else [fixed_response] * B
            if len(rows) != B:
                raise ValueError(f"fixed_response has {len(rows)} responses for a batch of {B} prompts")
            return self.score([r.tolist() for r in idx], rows, temperature, top_k, top_p, details)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")

        B, T0 = idx.shape
        cache = KVCache(self.config, B, idx.device, self.lm_head.weight.dtype) if use_cache else None
        dev64 = 'cpu' if idx.device.type == 'mps' else idx.device  # where the float64 math runs (f64)
        done = torch.zeros(B, dtype=torch.bool, device=dev64)
        lengths = torch.full((B,), max_new_tokens, dtype=torch.long)
        lps, slps, ranks, top1, steps = [], [], [], [], []
        for t in range(max_new_tokens):
            logits = f64(self._next_logits(idx, cache))  # (B, V), converted once
            idx_next, slp = sample(logits, temperature, top_k, top_p, generator)  # (B,), (B, V) float64
            if stop_token is not None:
                idx_next = idx_next.masked_fill(done, stop_token)  # finished rows: padding
            mlp = slp if is_model_distribution(temperature, top_k, top_p) else logits.log_softmax(-1)  # (B, V)
            chosen = mlp.gather(-1, idx_next[:, None])  # (B, 1)
            lps.append(chosen[:, 0])
            slps.append(slp.gather(-1, idx_next[:, None])[:, 0])
            ranks.append((mlp > chosen).sum(-1) + 1)
            top1.append(mlp.argmax(-1))
            if details:
                steps.append(_steps(mlp, slp, idx_next, details))
            idx = torch.cat((idx, idx_next.to(idx.device)[:, None]), dim=1)
            if stop_token is not None:
                newly = (idx_next == stop_token) & ~done
                lengths[newly.cpu()] = t + 1
                done |= newly
                if bool(done.all()):
                    break

        lps = torch.stack(lps, 1).cpu() if lps else torch.zeros(B, 0, dtype=torch.float64)  # (B, T)
        slps = torch.stack(slps, 1).cpu() if slps else torch.zeros(B, 0, dtype=torch.float64)
        ranks = torch.stack(ranks, 1).cpu() if ranks else torch.zeros(B, 0, dtype=torch.long)
        top1 = torch.stack(top1, 1).cpu() if top1 else torch.zeros(B, 0, dtype=torch.long)
        out = []
        for b in range(B):
            n = int(lengths[b].clamp(max=lps.size(1)))
            out.append(Sample(prompt=idx[b, :T0].tolist(), tokens=idx[b, T0:T0 + n].tolist(),
                              logprobs=lps[b, :n].clone(), sample_logprobs=slps[b, :n].clone(),
                              ranks=ranks[b, :n].clone(), top1=top1[b, :n].clone(),
                              steps=[s[b] for s in steps[:n]] if details else None,
                              stopped=bool(done[b]) and stop_token is not None))
        return out

    @torch.inference_mode()
    def score(self, prompts, responses, temperature=1.0, top_k=None, top_p=None, details=0, chunk=16):
        """Log-probability of each response after its prompt: one forward pass over all rows
        (teacher forcing, right padding: causal attention never looks at the padding after a row).

        prompts, responses: lists of token-id lists (one pair per row). Returns one `Sample` per row,
        equal to what generate() would report token by token if it had drawn these tokens. A pair
        longer than block_size is scored with a sliding window: each token after position block_size
        sees the block_size tokens before it, as generation would give it (one extra window each)."""
        check_sampling(temperature, top_k, top_p)
        V, bs = self.config.vocab_size, self.config.block_size
        if not isinstance(prompts, (list, tuple)) or not isinstance(responses, (list, tuple)) \
                or len(prompts) != len(responses):
            raise ValueError("score() takes two lists of equal length: prompts and responses (token-id lists)")
        for i, (p, r) in enumerate(zip(prompts, responses)):
            for name, ids, empty_ok in (('prompt', p, False), ('fixed_response', r, False)):
                if not isinstance(ids, (list, tuple)) or isinstance(ids, str):
                    raise ValueError(f"{name} of row {i} must be a list of token ids, got {type(ids).__name__}")
                if not ids and not empty_ok:
                    raise ValueError(f"{name} of row {i} is empty: give at least one token id")
                bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < V]
                if bad:
                    raise ValueError(f"{name} of row {i} has ids outside the vocabulary [0, {V}): {bad[:5]}")
        device = self.lm_head.weight.device
        seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]

        # 1) every target whose context fits in one block: one padded forward pass over all rows
        L = min(max(len(s) for s in seqs), bs)
        x = torch.zeros(len(seqs), L, dtype=torch.long, device=device)
        for b, s in enumerate(seqs):
            x[b, :min(len(s), L)] = torch.tensor(s[:L], device=device)
        h = self.hidden(x)  # (B, L, C)
        # 2) targets past block_size: each sees the block_size tokens before it, in a window of its own
        windows = [s[i - bs:i] for p, s in zip(prompts, seqs) for i in range(max(len(p), bs + 1), len(s))]
        wh = [self.hidden(torch.tensor(windows[w:w + chunk], device=device))[:, -1]  # (n, C)
              for w in range(0, len(windows), chunk)]
        wh = torch.cat(wh) if wh else h.new_zeros(0, h.size(-1))
        parts, w = [], 0
        for b, (p, s) in enumerate(zip(prompts, seqs)):
            end = min(len(s), bs + 1)  # targets [len(p), end) are predicted inside the block, at i-1
            parts.append(h[b, len(p) - 1:end - 1])
            n_out = len(s) - max(len(p), end)
            parts.append(wh[w:w + n_out])
            w += n_out
        hs = torch.cat(parts)  # (N, C): the state that predicts each response token, rows in order
        targets = torch.tensor([t for r in responses for t in r], device=device)

        lps, slps, ranks, top1, steps = [], [], [], [], []
        for c in range(0, hs.size(0), 256):  # float64 log-softmax over V, a chunk at a time
            logits = self.lm_head(hs[c:c + 256])  # (n, V)
            mlp = f64(logits).log_softmax(-1)  # (n, V) model distribution
            tg = targets[c:c + 256].to(mlp.device)  # (n,)
            chosen = mlp.gather(-1, tg[:, None])  # (n, 1)
            lps.append(chosen[:, 0])
            ranks.append((mlp > chosen).sum(-1) + 1)
            top1.append(mlp.argmax(-1))
            if is_model_distribution(temperature, top_k, top_p):
                slps.append(lps[-1])  # the sampling distribution is the model's own
                slp = mlp
            else:
                slp = sampling_logprobs(logits, temperature, top_k, top_p)
                slps.append(slp.gather(-1, tg[:, None])[:, 0])
            if details:
                steps += _steps(mlp, slp, tg, details)
        lps, slps, ranks, top1 = (torch.cat(x).cpu() for x in (lps, slps, ranks, top1))
        out, k = [], 0
        for p, r in zip(prompts, responses):
            n = len(r)
            out.append(Sample(prompt=list(p), tokens=list(r), logprobs=lps[k:k + n], sample_logprobs=slps[k:k + n],
                              ranks=ranks[k:k + n], top1=top1[k:k + n], steps=steps[k:k + n] if details else None))
            k += n
        return out

    # -------------------------------------------------------------------------
    # Beam search

    @torch.inference_mode()
    def beam_search(self, idx, max_new_tokens, num_beams=4, length_penalty=1.0, no_repeat_ngram_size=0,
                    stop_token=None, early_stopping=False):
        """Deterministic beam search from one prompt. Returns the finished beams (list of `Beam`), best first.

        idx: the prompt, a (1, T) LongTensor or a list of token ids.
        Every step extends each live beam by every token and keeps the num_beams extensions with the
        highest total log-probability (model distribution, float64). A beam finishes when it produces
        stop_token (kept in its tokens, as generate() does) or after max_new_tokens tokens.
        Finished beams are ranked by
            score = sum of the generated tokens' log-probs / (number of generated tokens) ** length_penalty
        (a stop token counts in both): length_penalty 1 ranks by mean log-prob per token, 0 by total
        log-prob (which favours short beams), > 1 favours longer ones still.
        no_repeat_ngram_size n > 0: no n-gram occurs twice in prompt + beam (tokens that would repeat
            one are banned), as Hugging Face does.

        Finished hypotheses and stopping are Hugging Face's (transformers' generate(num_beams=...),
        whose beams this returns token for token; tests/test_inspect.py checks it):
        - each step ranks the 2 * num_beams best candidates; a stop token among the best num_beams of
          them finishes that beam; the num_beams best other candidates live on;
        - at the last step (max_new_tokens) the best num_beams candidates all finish;
        - at most num_beams finished beams are kept, the best by score;
        - early_stopping=True: stop once num_beams beams have finished. False (the default): also stop
          once the best live beam, scored at its current length, cannot beat the worst finished one
          (a heuristic). 'never': stop only when no live beam can beat it at any length (exact).
        The length in the score counts generated tokens (not the prompt), the stop token included, as
        in transformers' current beam search: score is exactly sum(logprobs) / len(tokens) ** length_penalty.
        Fewer than num_beams beams come back only when no_repeat_ngram_size bans every continuation.
        num_beams=1 is greedy decoding: the same tokens as generate(temperature=0).

        Uses the KV cache (num_beams rows, reordered as beams move); past block_size the cropped
        window is recomputed every step, as generate() does."""
        if torch.is_tensor(idx):
            if idx.dim() == 2 and idx.size(0) != 1:
                raise ValueError(f"beam_search takes one prompt, got a batch of {idx.size(0)}: idx must be (1, T)")
            prompt = idx.reshape(-1).tolist()
        else:
            prompt = list(idx)
        V = self.config.vocab_size
        if not prompt or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < V for t in prompt):
            raise ValueError(f"the prompt must be a non-empty list of token ids in [0, {V}), got {prompt[:10]}")
        for name, val, lo in (('max_new_tokens', max_new_tokens, 1), ('num_beams', num_beams, 1),
                              ('no_repeat_ngram_size', no_repeat_ngram_size, 0)):
            if isinstance(val, bool) or not isinstance(val, int) or val < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
                or not math.isfinite(length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
        if early_stopping not in (True, False, 'never'):
            raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

        device = self.lm_head.weight.device
        T0, bs = len(prompt), self.config.block_size
        seqs = torch.tensor([prompt], device=device)  # (nb, T0 + t): live beams, one at first
        dev64 = 'cpu' if device.type == 'mps' else device  # where the float64 math runs (f64)
        lps = torch.zeros(1, 0, dtype=torch.float64, device=dev64)  # (nb, t) per-token log-probs
        sums = torch.zeros(1, dtype=torch.float64, device=dev64)  # (nb,) total log-prob of each beam
        cache = KVCache(self.config, 1, device, self.lm_head.weight.dtype)
        finished = []  # Beams, best first, at most num_beams

        def finish(row_lps, tokens, stopped):
            n = len(tokens)
            b = Beam(prompt=list(prompt), tokens=tokens, logprobs=row_lps.cpu(),
                     score=float(row_lps.sum()) / n ** length_penalty, length_penalty=length_penalty,
                     stopped=stopped)
            finished.append(b)
            finished.sort(key=lambda h: -h.score)  # stable: on a tie the earlier beam stays ahead
            del finished[num_beams:]

        for t in range(max_new_tokens):
            logits = self._next_logits(seqs, cache)  # (nb, V)
            lp = f64(logits).log_softmax(-1)  # (nb, V) model distribution
            cand = sums[:, None] + lp  # (nb, V) total log-prob of every extension
            if no_repeat_ngram_size:
                for b, row in enumerate(seqs.tolist()):
                    banned = _ngram_bans(row, no_repeat_ngram_size)
                    if banned:
                        cand[b, banned] = float('-inf')
            top, flat = cand.view(-1).topk(min(2 * num_beams, cand.numel()))  # best first
            last = t == max_new_tokens - 1  # every candidate ends here
            keep_b, keep_t = [], []
            for rank, (s, f) in enumerate(zip(top.tolist(), flat.tolist())):
                if s == float('-inf') or (last and rank == num_beams):
                    break
                b, tk = divmod(f, V)
                if tk == stop_token or last:
                    if rank < num_beams:  # an ending below the top num_beams candidates is dropped, as in HF
                        finish(torch.cat((lps[b], lp[b, tk:tk + 1])), seqs[b, T0:].tolist() + [tk], tk == stop_token)
                    continue
                keep_b.append(b)
                keep_t.append(tk)
                if len(keep_b) == num_beams:
                    break
            if not keep_b:  # the last step, or every extension banned or stopped
                break
            bi, ti = torch.tensor(keep_b, device=dev64), torch.tensor(keep_t, device=dev64)
            new_lp = lp[bi, ti]  # (nb,)
            lps = torch.cat((lps[bi], new_lp[:, None]), dim=1)
            sums = sums[bi] + new_lp
            bi, ti = bi.to(device), ti.to(device)
            seqs = torch.cat((seqs[bi], ti[:, None]), dim=1)
            if seqs.size(1) <= bs:
                cache.reorder(bi)  # each beam takes its parent's keys and values along
            if len(finished) == num_beams:
                if early_stopping is True:
                    break
                # can a live beam still beat the worst finished one? Its total log-prob can only fall, so
                # 'never' bounds its score at the length that maximises it (exact); False assumes the
                # current length (Hugging Face's heuristic)
                n = max_new_tokens if early_stopping == 'never' and length_penalty > 0 else t + 1
                if finished[-1].score >= float(sums.max()) / n ** length_penalty:
                    break
        return finished


def _ngram_bans(seq, n):
    """Token ids that would complete an n-gram already in seq (a list of ids): what no_repeat_ngram bans."""
    if len(seq) < n - 1:
        return []
    prefix = seq[len(seq) - n + 1:]
    return [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix]


@dataclass
class Beam(_Tokens):
    """One finished hypothesis of GPT.beam_search(). Log-probs are under the model distribution
    (beam search is deterministic: there is no sampling distribution)."""
    prompt: list            # prompt token ids
    tokens: list            # generated token ids (the stop token last, when stopped)
    logprobs: torch.Tensor  # (T,) float64: log p(tokens[i] | prompt, tokens[:i])
    score: float            # logprob / len(tokens) ** length_penalty, what beams are ranked by
    length_penalty: float
    stopped: bool = False   # ended at stop_token (else at max_new_tokens)
