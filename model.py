"""
The GPT language model (nanoGPT's, faithful to GPT-2), with the generate() that reports probabilities.

Nothing here reads files, draws, or parses arguments. generate(), score() and beam_search() forward to
nanoprobs/decoding.py and nanoprobs/beams.py (the KV cache, the sampling math, the result types), which
take the model as an argument and never import this file; the Hugging Face weight mapping is
nanoprobs/hf.py.

What this file adds to upstream nanoGPT's model.py:
- GELU choice: GPT-2 was trained with the tanh approximation ('tanh', what transformers calls
  gelu_new); upstream nanoGPT uses exact GELU ('exact'), and checkpoints trained that way keep it.
- GPT.from_pretrained() also takes a local Hugging Face GPT-2 directory.
- forward(cache=...) for fast incremental decoding (the cache is nanoprobs.decoding.KVCache), and a
  capture mode for the inspection tools.
- generate() returns, for every sample, the log-probability of every token it produced, under the
  model distribution and under the sampling distribution (see decoding.Sample), and optionally the
  top-k candidates of every step; generate(fixed_response=...) scores a given response instead.
"""

import inspect
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanoprobs import beams, decoding, hf


class LayerNorm(nn.Module):
    """ LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False """

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


# Few rows times a float32 (out, in) weight on CPU: torch's x @ W.T kernel reads W at a third of the speed a
# matrix-vector product does, while W @ x.T (the same numbers, W as it is) runs 1.4-1.7x faster from 4 rows
# to 128 (generation's batch of samples, one token each); below 4 rows x @ W.T is as fast or faster.
FEW_ROWS = range(4, 129)


def is_few_rows(x, w):
    """Whether x @ w.T runs faster as (w @ x.T).T: on CPU, float32, w contiguous (out, in), FEW_ROWS rows."""
    return (x.numel() // x.size(-1) in FEW_ROWS and x.device.type == 'cpu' and x.dtype == w.dtype == torch.float32
            and w.is_contiguous())


def few_rows_matmul(x, w, b=None):
    """x @ w.T (+ b) for x (..., in) and w (out, in), computed as (w @ x.T).T where is_few_rows says that is
    faster; F.linear otherwise. The same math and autograd either way."""
    if not is_few_rows(x, w):
        return F.linear(x, w, b)
    x2 = x.reshape(-1, x.size(-1))  # (rows, in)
    y = torch.mm(w, x2.t()) if b is None else torch.addmm(b[:, None], w, x2.t())  # (out, rows)
    return y.t().contiguous().view(*x.shape[:-1], w.size(0))  # (..., out)


class Linear(nn.Linear):
    """nn.Linear (same weights, state dict and autograd) with few_rows_matmul's faster kernel for few rows."""

    def forward(self, x):
        return few_rows_matmul(x, self.weight, self.bias)


@dataclass
class Capture:
    """Pass to GPT.forward(capture=...) to record what happens inside (for the inspection scripts).

    attn[l]:  (B, nh, T, T_total) attention weights of layer l (rows sum to 1, zero above the diagonal)
    resid[l]: (B, T, C) the residual stream entering block l; resid[n_layer] is the output of the
              last block, before ln_f.
    With detail=True also, per layer (tools/trace.py shows them): qkv[l] = (q, k, v), each
    (B, nh, T, hs) after the reshape, and scores[l] (B, nh, T, T_total), q k^T / sqrt(hs) after the
    causal mask (-inf above the diagonal), the input of the softmax."""
    attn: list = field(default_factory=list)
    resid: list = field(default_factory=list)
    detail: bool = False
    qkv: list = field(default_factory=list)
    scores: list = field(default_factory=list)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, but in a batch
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
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
            scores = att.masked_fill(~mask, float('-inf'))
            att = scores.softmax(dim=-1)
            capture.attn.append(att)
            if capture.detail:
                capture.qkv.append((q, k, v))
                capture.scores.append(scores)
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
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2's weights were trained with the tanh approximation; upstream nanoGPT uses exact GELU
        self.gelu = nn.GELU(approximate='tanh' if config.gelu == 'tanh' else 'none')
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
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
    gelu: str = 'exact'  # 'exact' (upstream nanoGPT) or 'tanh' (GPT-2); never in a checkpoint's model_args

    def __post_init__(self):
        if self.gelu not in ('exact', 'tanh'):
            raise ValueError(f"GPTConfig.gelu must be 'exact' or 'tanh', got {self.gelu!r}")


# checkpoint['model_args'] holds exactly these keys, so upstream's GPTConfig(**model_args) keeps working
MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')



class KeptTranspose(torch.autograd.Function):
    """x @ wt, where wt is a kept contiguous copy of w.T (GPT.inference_head); the gradients go to x and
    w as through x @ w.T, so a copy made for speed never cuts w off from training."""

    @staticmethod
    def forward(ctx, x, w, wt):
        ctx.save_for_backward(x, w)
        return x @ wt

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = (g @ w.to(g.dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = (g.flatten(0, -2).t() @ x.flatten(0, -2)).to(w.dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None


def embedding(num, dim):
    """nn.Embedding(num, dim). Under torch.device('meta') (GPT.from_state_dict) it skips its random init:
    normal_ on the meta device imports torch._dynamo, seconds of startup, for values never used."""
    w = torch.empty(num, dim)  # a meta tensor, no memory, under torch.device('meta')
    return nn.Embedding(num, dim, _weight=w) if w.is_meta else nn.Embedding(num, dim)


def state_dict_error(e, limit=300):
    """load_state_dict's RuntimeError as one short line: what is missing, unexpected or of the wrong size."""
    lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()] or [str(e)]
    text = ' '.join(lines)
    return text if len(text) <= limit else text[:limit] + ' ...'

# -----------------------------------------------------------------------------

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=embedding(config.vocab_size, config.n_embd),
            wpe=embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2

        if self.lm_head.weight.is_meta:
            return  # built for from_state_dict: the weights come next, there is nothing to initialise
        # init all weights
        self.apply(self._init_weights)
        # apply special scaled init to the residual projections, per GPT-2 paper
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def train(self, mode=True):
        """As nn.Module's; also drops the inference-only copy of the unembedding (inference_head), so that
        none is kept while training."""
        self.__dict__.pop('_inference_head', None)
        return super().train(mode)

    def inference_head(self):
        """The unembedding as a contiguous (C, V) float32 matrix, for unembed(); None where lm_head itself
        runs (training mode; a GPU with float32 weights, where the layout makes no difference; an lm_head
        that is not a plain bias-free nn.Linear).

        A transposed copy of the tied (V, C) embedding: at the batch sizes of generation (1-16 rows) CPU
        matmuls over a contiguous (C, V) matrix run 1.4-1.8x faster than over the (V, C) one (python -m
        bench.generate), and with half-precision weights the copy is float32, so that the logits are too
        (a bfloat16 logit near GPT-2's typical -100 is off by up to 0.25). It costs V x C x 4 bytes beside
        the weights (154 MB for GPT-2's 50257 x 768, 322 MB for gpt2-xl), is made at the first call, and
        is kept until the weights change (a new tensor, or in-place writes: the version counter moves) or
        the model switches between train() and eval(), which drop it: it is never kept for training."""
        head = self.lm_head
        if self.training or type(head) is not nn.Linear or head.bias is not None:
            return None
        w = head.weight
        if w.device.type != 'cpu' and w.dtype in (torch.float32, torch.float64):
            return None
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        kept = self.__dict__.get('_inference_head')
        if kept is None or kept[0] != key:
            self.__dict__.pop('_inference_head', None)  # free the old copy before making the new one
            dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
            kept = (key, w.detach().t().to(dtype).contiguous())  # (C, V)
            self.__dict__['_inference_head'] = kept
        return kept[1]

    def fit_layout(self, rows):
        """Before decoding `rows` sequences together: give every block matmul weight the contiguous (out, in)
        layout that few_rows_matmul reads fastest, in place (the same values). A Hugging Face folder's weights
        arrive as transposed views of its Conv1D matrices (hf.to_ours: no copy at load), which x @ W.T reads
        well for one row but not for FEW_ROWS rows; the one copy (~0.3 s for GPT-2 124M on one core) is paid
        back within ~10 steps of 10 rows. Nothing changes for other rows, devices or dtypes."""
        if rows not in FEW_ROWS:
            return
        with torch.inference_mode(False), torch.no_grad():  # normal tensors, which training can still use
            for m in self.modules():
                w = m.weight if isinstance(m, Linear) else None
                if w is not None and w.device.type == 'cpu' and w.dtype == torch.float32 and not w.is_contiguous():
                    w.data = w.data.contiguous()

    def unembed(self, x):
        """Logits (..., V) of final hidden states x (..., C) (hidden()'s output): lm_head(x), outside
        training through inference_head(), in float32 even for half-precision weights. Gradients reach x
        and the embedding as through lm_head."""
        if is_few_rows(x, self.lm_head.weight):
            return few_rows_matmul(x, self.lm_head.weight)  # faster than the kept copy here, and makes none
        wt = self.inference_head()
        if wt is None:
            return self.lm_head(x)
        with torch.autocast(x.device.type, enabled=False):  # float32 logits under a bf16/fp16 autocast
            return KeptTranspose.apply(x.to(wt.dtype), self.lm_head.weight, wt)  # (..., V)

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

        w = self.lm_head.weight
        # half-precision matmul weights (load.cast_matmul_weights) run under autocast, asked for or not: the
        # residual stream and the LayerNorms stay float32
        half = w.dtype in (torch.float16, torch.bfloat16)
        with torch.autocast(idx.device.type, dtype=w.dtype) if half else nullcontext():
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
            logits = self.unembed(x if all_logits else x[:, [-1], :])
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
    def from_state_dict(cls, config, state_dict):
        """A GPT holding these tensors as its weights, built without initialising any: the modules are made
        on the meta device and take the tensors as they are (load_state_dict(assign=True): no copy, so a
        memory-mapped file stays mapped until a weight is written or cast). The token embedding and
        lm_head are one tied matrix; a state dict may name it either way (given both, lm_head's is used,
        as load_state_dict into a tied model does). Old upstream mask buffers (attn.bias) are skipped.
        RuntimeError, as load_state_dict's, when the tensors do not fit config."""
        with torch.device('meta'):
            model = cls(config)
        sd = {k: v for k, v in state_dict.items() if not k.endswith('.attn.bias')}
        head = sd.get('lm_head.weight', sd.get('transformer.wte.weight'))
        if head is not None:
            sd['lm_head.weight'] = sd['transformer.wte.weight'] = head
        model.load_state_dict(sd, assign=True)
        model.transformer.wte.weight = model.lm_head.weight  # assign made them two Parameters: tie again
        return model

    @classmethod
    def from_pretrained(cls, model_type, override_args=None):
        """GPT-2 weights in the Hugging Face format: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' from the
        Hugging Face hub (downloaded once into its cache), or a local directory holding any
        GPT-2-architecture model (config.json + model.safetensors or pytorch_model.bin). The weights are
        memory-mapped and used as they are; no transformers model is built. The model gets GPT-2's tanh
        GELU, so its logits match transformers'. The format's rules live in nanoprobs/hf.py."""
        override_args = override_args or {}
        assert all(k == 'dropout' for k in override_args), "only dropout can be overridden"
        folder = model_type if os.path.isdir(model_type) else hf.hub_folder(model_type)
        args, sd = hf.read_folder(folder, model_type)
        config = GPTConfig(**args, dropout=override_args.get('dropout', 0.0))
        try:
            return cls.from_state_dict(config, sd)
        except RuntimeError as e:
            raise ValueError(f"{model_type}: the weights do not fit its config.json (is it a GPT-2 model?): "
                             f"{state_dict_error(e)}") from None

    def to_hf(self, eot=None):
        """The inverse of from_pretrained: a transformers GPT2LMHeadModel computing the same function
        (see hf.to_hf)."""
        return hf.to_hf(self, eot)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None):
        """AdamW with weight decay on every 2-D tensor (matmuls, embeddings), none on biases and norms.
        fused: None = fused on CUDA, foreach elsewhere; True/False to choose (train.py asks for the fused
        CPU kernel where PyTorch has one, several times faster than foreach there)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        nodecay = [p for p in params if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay},
                  {'params': nodecay, 'weight_decay': 0.0}]
        num_decay, num_nodecay = sum(p.numel() for p in decay), sum(p.numel() for p in nodecay)
        print(f"num decayed parameter tensors: {len(decay)}, with {num_decay:,} parameters")
        print(f"num non-decayed parameter tensors: {len(nodecay)}, with {num_nodecay:,} parameters")
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
    # Generation, scoring and beam search: the machinery lives in nanoprobs/decoding.py and beams.py

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, fixed_response=None,
                 stop_token=None, details=0, generator=None, use_cache=True):
        """Continue each row of idx (B, T); one decoding.Sample per row, with the probability of every token.
        This forwards to nanoprobs/decoding.py's generate(), whose docstring explains every argument."""
        return decoding.generate(self, idx, max_new_tokens, temperature, top_k, top_p, fixed_response,
                                 stop_token, details, generator, use_cache)

    def score(self, prompts, responses, temperature=1.0, top_k=None, top_p=None, details=0):
        """Log-probability of each response after its prompt, in one forward pass: decoding.score()."""
        return decoding.score(self, prompts, responses, temperature, top_k, top_p, details)

    def beam_search(self, idx, max_new_tokens, num_beams=4, length_penalty=1.0, no_repeat_ngram_size=0,
                    stop_token=None, early_stopping=False, details=0):
        """Deterministic beam search from one prompt, the finished Beams best first: beams.beam_search()."""
        return beams.beam_search(self, idx, max_new_tokens, num_beams, length_penalty,
                                 no_repeat_ngram_size, stop_token, early_stopping, details)
