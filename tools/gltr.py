"""
A whole text scored as GLTR does: every token's probability and rank under the model, given
<|endoftext|> and what precedes it, in the page of sample.py's report (shaded by rank, the inspector on
every token), with GLTR's summary beside each text: the share of its tokens in the model's top 10 / 100 /
1000 / beyond, and a histogram of their probability. Two texts side by side: a human's and a model's.

    python -m tools.gltr --init_from=gpt2 --files=essay.txt,generated.txt
    python -m tools.gltr --init_from=resume --out_dir=out-stories-tiny --text="Once upon a time there was a king."

Writes results/gltr_<model>/index.html and prints each text's summary. Probabilities are under the model
distribution (temperature 1, no top-k/top-p); a text longer than block_size is scored with a sliding
window (each token sees the block_size tokens before it). --attribution=ig adds integrated-gradients
attribution to every token (backward passes; its cost is printed). See nanoprobs/gltr.py.
"""

import os

from configurator import UserError

# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # 'resume' (from out_dir), a gpt2 variant, a Hugging Face folder or a ckpt.pt path
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
files: str = ''  # comma-separated text files, each scored as one text
text: str = ''  # or the text itself (FILE:path works too)
top: int = 10  # candidates per token in the inspector
inspector: bool = True  # the inspector's logit lens and attention panels
attribution: str = ''  # 'ig' or 'gxi': attribution panels too (backward passes per token)
results_dir: str = 'results'  # the page goes to results_dir/gltr_<model>/index.html
device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'float32'  # 'auto' = bfloat16/float16 on CUDA
# -----------------------------------------------------------------------------


def main():
    from nanoprobs import html_report
    from nanoprobs.formatting import file_tag
    from nanoprobs.gltr import score_text
    from nanoprobs.inspector import Panels
    from nanoprobs.load import load_model, read_text

    names = [f for f in files.split(',') if f.strip()]
    texts = [read_text('FILE:' + f.strip(), 'files') for f in names]
    if text:
        texts.append(read_text(text, 'text'))
        names.append('text')
    if not texts:
        raise UserError("give --files=a.txt,b.txt or --text=\"...\": the texts to score")
    if attribution not in ('', 'ig', 'gxi'):
        raise UserError(f"--attribution={attribution!r}: give 'ig', 'gxi' or '' (off)")
    loaded = load_model(init_from, out_dir, device, dtype)
    samples = []
    for name, t in zip(names, texts):
        with loaded.ctx:
            s = score_text(loaded.model, loaded.tok, t, top)
        samples.append(s)
    panels = Panels(lens=inspector, attention=inspector, attribution=attribution) if inspector or attribution else None
    settings = dict(model=loaded.source, device=loaded.device, dtype=loaded.dtype)
    with loaded.ctx:
        page = html_report.gltr_page(samples, [os.path.basename(n) for n in names], loaded.tok, settings,
                                     model=loaded.model, panels=panels)
    print(f"{loaded.source}: every token scored after <|endoftext|> (model distribution)")
    print(f"{'text':<24} {'tokens':>7} {'top 10':>7} {'top 100':>8} {'top 1000':>9} {'beyond':>7} {'ppl':>10}")
    for row in page['table']['rows']:
        print(f"{row[0][:24]:<24} {row[1]:>7} {row[2]:>7} {row[3]:>8} {row[4]:>9} {row[5]:>7} {row[7]:>10}")
    path = html_report.write_html(page, os.path.join(results_dir, f"gltr_{file_tag(loaded.source)}", 'index.html'))
    print(f"page (open it in a browser): {path}")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
