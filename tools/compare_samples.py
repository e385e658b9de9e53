"""
Before/after samples: the same prompts, seeds and sampling settings through two models (e.g. GPT-2 and
the checkpoint fine-tuned from it), written side by side as a Markdown table with every sample's
probability: the qualitative comparison a report needs.

    python -m tools.compare_samples --init_from=gpt2 --compare_init_from=resume --compare_out_dir=out-children
    python -m tools.compare_samples --init_from=gpt2 --compare_init_from=resume --prompts=FILE:prompts.txt \
        --num_samples=3 --temperature=0.8 --top_k=200 --max_new_tokens=60

--prompts is '|'-separated text, or FILE:path with one prompt per line. Sample j of prompt i is drawn
with a torch.Generator seeded with seed + i (both models get the same seeds; their samples still
differ because their distributions do). Each sample's probability is given under the model's own
distribution (temperature 1, no top-k/top-p), under the sampling distribution it was drawn from, and,
when both models share a vocabulary, under the other model (how surprising this text is to it).
Writes results/<name>_<model A>_vs_<model B>.md and prints the same table.
"""

import os

import torch

from configurator import UserError
from nanoprobs import atomic
from nanoprobs.load import encode_prompt
from nanoprobs.sampling import make_generator
from nanoprobs.formatting import format_prob


def read_prompts(spec):
    """'a|b|c' -> ['a', 'b', 'c']; 'FILE:path' -> the file's non-empty lines (\\n in a line: a newline)."""
    if spec.startswith('FILE:'):
        with open(spec[5:], 'r', encoding='utf-8') as f:
            prompts = [line.rstrip('\n').replace('\\n', '\n') for line in f if line.strip()]
    else:
        prompts = [p for p in spec.split('|') if p]
    if not prompts:
        raise ValueError(f"no prompts in {spec!r}: give --prompts='first|second' "
                         "or --prompts=FILE:prompts.txt")
    return prompts


def draw(loaded, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, seed, stop_at_eot):
    """num_samples samples (decoding.Sample) per prompt, prompt i with a generator seeded seed + i."""
    out = []
    for i, p in enumerate(prompts):
        ids = encode_prompt(loaded.tok, p)
        g = make_generator(loaded.device, seed + i)
        x = torch.tensor([ids] * num_samples, dtype=torch.long, device=loaded.device)
        with loaded.ctx:
            out.append(loaded.model.generate(x, max_new_tokens, temperature, top_k, top_p, generator=g,
                                             stop_token=loaded.tok.eot if stop_at_eot else None))
    return out


def cross_logprobs(loaded, samples):
    """Log-probability (model distribution) of each sample's tokens under another model with the same
    vocabulary: samples[i][j] -> list of lists of floats."""
    flat = [s for row in samples for s in row if s.tokens]
    with loaded.ctx:
        scored = iter(loaded.model.score([s.prompt for s in flat], [s.tokens for s in flat]) if flat else [])
    return [[next(scored).logprob if s.tokens else 0.0 for s in row] for row in samples]


def md(text):
    """Text as the content of one Markdown table cell, shown literally."""
    text = text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
    for c in '\\`*_[]|#':
        text = text.replace(c, '\\' + c)
    return text.replace('\r', '').replace('\n', '<br>')


def markdown(prompts, names, samples, decoders, cross, settings):
    """The side-by-side table. samples[k][i][j]: model k, prompt i, sample j; decoders[k] turns model
    k's token ids into text; cross[k] the other model's log-probs of model k's samples (or None)."""
    a, b = names
    lines = [f"# Samples before/after: {a} vs {b}", "",
             f"Same prompts, seeds and settings for both models: {settings}.", "",
             "p model: probability of the whole sample under the model's own distribution (temperature 1, "
             "no top-k/top-p); p sampled: under the distribution it was drawn from; "
             "p under the other: the same tokens scored by the other model.", "",
             f"| prompt | # | {md(a)} | p | {md(b)} | p |", "|---|---|---|---|---|---|"]
    for i, p in enumerate(prompts):
        for j in range(len(samples[0][i])):
            cells = [md(p) if j == 0 else '', str(j + 1)]
            for k in range(2):
                s = samples[k][i][j]
                probs = [f"model {format_prob(s.logprob)}", f"sampled {format_prob(s.sample_logprob)}"]
                if cross[k] is not None:
                    probs.append(f"under {md(names[1 - k])} {format_prob(cross[k][i][j])}")
                cells += [md(decoders[k](s.tokens)), '<br>'.join(probs)]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # model A ("before"): 'resume' (from out_dir), a gpt2 variant, HF folder or ckpt.pt
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
compare_init_from: str = 'resume'  # model B ("after"), same kinds; 'resume' reads compare_out_dir
compare_out_dir: str = 'out'  # where compare_init_from='resume' finds ckpt.pt
prompts: str = ("Once upon a time|The little girl looked at the|"
                "The king said to his son")  # '|'-separated, or FILE:path
num_samples: int = 2  # samples per prompt and model
max_new_tokens: int = 40  # tokens per sample (fewer when it ends at <|endoftext|>)
temperature: float = 0.8  # 1.0 = the model's own distribution, < 1 sharper, 0 = greedy
top_k: int | None = 200  # keep only the top_k most likely tokens (None/0 = off)
top_p: float = 1.0  # nucleus sampling (1.0 = off)
seed: int = 1337  # prompt i uses seed + i, for both models
stop_at_eot: bool = True  # end a sample at <|endoftext|> (character-level models have none)
results_dir: str = 'results'  # where the Markdown file goes
name: str = 'compare_samples'  # results/<name>_<model A>_vs_<model B>.md
device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'float32'  # probabilities are most exact in float32; 'auto' = bfloat16/float16 on CUDA
# -----------------------------------------------------------------------------


def main():
    from nanoprobs.load import load_model
    from nanoprobs.sampling import check_sampling
    from nanoprobs.formatting import file_tag, model_label

    check_sampling(temperature, top_k, top_p)
    if num_samples < 1 or max_new_tokens < 1:
        raise UserError(f"num_samples and max_new_tokens must be >= 1, got {num_samples}, {max_new_tokens}")
    ps = read_prompts(prompts)
    models = [load_model(init_from, out_dir, device, dtype),
              load_model(compare_init_from, compare_out_dir, device, dtype)]
    names = [model_label(loaded.source) for loaded in models]
    if names[0] == names[1]:
        names = ['A: ' + names[0], 'B: ' + names[1]]
    samples = []
    for loaded, n in zip(models, names):
        print(f"sampling {len(ps)} prompts x {num_samples} from {n} ...")
        samples.append(draw(loaded, ps, num_samples, max_new_tokens, temperature, top_k, top_p, seed,
                            stop_at_eot))
    same_vocab = models[0].tok.name == models[1].tok.name
    cross = ([cross_logprobs(models[1], samples[0]), cross_logprobs(models[0], samples[1])] if same_vocab
             else [None, None])
    if not same_vocab:
        print(f"note: the models use different vocabularies ({models[0].tok.name} vs {models[1].tok.name}): "
              "no cross-model probabilities")
    settings = (f"temperature={temperature}, top_k={top_k}, top_p={top_p}, max_new_tokens={max_new_tokens}, "
                f"seed={seed} (prompt i: seed + i), {num_samples} sample(s) per prompt")
    table = markdown(ps, names, samples, [loaded.tok.decode for loaded in models], cross, settings)
    path = os.path.join(results_dir, f"{name}_{file_tag(models[0].source, models[1].source)}.md")
    os.makedirs(results_dir, exist_ok=True)
    atomic.write_text(path, table)
    print(table)
    print(f"saved {path}")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
