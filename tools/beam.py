"""
Beam search next to greedy decoding: the beams ranked by their length-normalised score, the arithmetic
of each score shown, and the greedy continuation with its probability.

    python -m tools.beam --init_from=gpt2 --start="The capital of France is" --num_beams=4
    python -m tools.beam --init_from=resume --out_dir=out-children --start="Once upon a time" --num_beams=8 \
        --length_penalty=0.6 --no_repeat_ngram_size=3 --max_new_tokens=40

score = (sum of the beam's token log-probs) / (number of tokens) ** length_penalty, natural logs, model
distribution (beam search is deterministic). length_penalty=1 ranks by mean log-prob per token; 0 by
total log-prob, which favours short beams. Beams end at <|endoftext|> (--stop_at_eot=False to not stop)
or after max_new_tokens. See beam_search in decoding.py for the exact rules.

The search and its report live in nanoprobs/beams.py; sample.py --num_beams=N prints the same report.
"""



# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # 'resume' (from out_dir), a gpt2 variant, a Hugging Face folder or a ckpt.pt path
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
start: str = "The capital of France is"  # the prompt, or "FILE:prompt.txt"
num_beams: int = 4  # beams kept at every step (1 = greedy)
max_new_tokens: int = 30  # most tokens a beam can have
length_penalty: float = 1.0  # alpha in score = sum of log-probs / tokens^alpha
no_repeat_ngram_size: int = 0  # n > 0: no n-gram may occur twice (prompt included)
stop_at_eot: bool = True  # a beam ends at <|endoftext|> (character-level models have none)
early_stopping: bool | str = False  # True, False (Hugging Face's heuristic) or 'never' (exact)
device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'auto'  # 'auto', 'float32', 'bfloat16', 'float16', 'float64'
# -----------------------------------------------------------------------------


def main():
    from nanoprobs.beams import greedy_and_beams, print_beams
    from nanoprobs.load import encode_prompt, load_model

    loaded = load_model(init_from, out_dir, device, dtype)
    ids = encode_prompt(loaded.tok, start)
    stop = loaded.tok.eot if stop_at_eot else None
    print(f"{loaded.source}: prompt {loaded.tok.decode(ids)!r} ({len(ids)} tokens)")
    with loaded.ctx:
        greedy, beams, (t_greedy, t_beams) = greedy_and_beams(
            loaded.model, ids, max_new_tokens, num_beams, length_penalty, no_repeat_ngram_size, stop,
            early_stopping)
    print_beams(beams, greedy, loaded.tok)
    print(f"time: beam search {t_beams:.2f} s ({num_beams} beams), greedy {t_greedy:.2f} s "
          "(both after one untimed warm-up pass)")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
