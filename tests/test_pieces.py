"""Byte pieces: GPT-2 tokens that are parts of a UTF-8 character are shown as the character they form
(grouped) or as a compact <E2 80> label, never as \\xe2\\x80 escapes, in every view."""
import math

import pytest

from nanoprobs import tokenizer
from nanoprobs.plots import common, overview, steps

TEXTS = ['He said “Hello” — and ‘left’.', 'café 你好 😀 naïve', '“”‘’', 'plain ascii']


@pytest.mark.parametrize('text', TEXTS)
def test_pieces_group_bytes_into_characters(gpt2_tok, text):
    ids = gpt2_tok.encode(text)
    pieces = gpt2_tok.pieces(ids)
    assert ''.join(t for _, _, t in pieces) == text  # every character shown, none twice, no escapes
    assert [a for a, _, _ in pieces] == [0] + [b for _, b, _ in pieces[:-1]] and pieces[-1][1] == len(ids)
    for a, b, t in pieces:
        assert gpt2_tok.decode(ids[a:b]) == t
        assert b - a == 1 or '\ufffd' in gpt2_tok.decode(ids[a:a + 1])  # only split characters are joined


def test_partial_token_labels(gpt2_tok):
    ids = gpt2_tok.encode(' “Hi')  # ' \xe2\x80' + '\x9c' + 'Hi'
    assert [gpt2_tok.token_text(i) for i in ids] == [' <E2 80>', '<9C>', 'Hi']
    assert gpt2_tok.pieces(ids[:1]) == [(0, 1, ' <E2 80>')]  # the character is not completed: its label
    assert gpt2_tok.pieces(ids[1:]) == [(0, 1, '<9C>'), (1, 2, 'Hi')]
    assert gpt2_tok.pieces([50300, ids[0], 50301]) == [(0, 1, '<id 50300>'), (1, 2, ' <E2 80>'), (2, 3, '<id 50301>')]
    assert tokenizer.byte_text(b'a\x80\x9cb\xff') == 'a<80 9C>b<FF>'
    assert gpt2_tok.display(ids) == ' “Hi' and gpt2_tok.display(ids[1:]) == '<9C>Hi'  # a slice cut in a character
    for i in range(50257):  # no token of the vocabulary is shown with a backslash escape
        assert '\\x' not in gpt2_tok.token_text(i) or '\\x' in gpt2_tok.decode([i])


def test_step_chart_labels_use_the_same_labels(gpt2_tok):
    from nanoprobs.decoding import Step
    q = gpt2_tok.encode(' “')[0]
    step = Step(chosen=q, chosen_logprob=-1.0, chosen_sample_logprob=-1.0, chosen_rank=1,
                top_ids=[q, 13], top_logprobs=[-1.0, -2.0], top_sample_logprobs=[-1.0, -2.0],
                entropy=1.0, sample_entropy=1.0)
    bars = steps.step_bars(step, gpt2_tok)
    assert bars.labels[0] == '␣<E2 80>'


def test_overview_draws_pieces_with_joint_probability(gpt2_tok):
    ids = gpt2_tok.encode('Once “upon”')
    lps = [-0.1 * (k + 1) for k in range(len(ids))]
    ov = overview.SampleOverview(prompt='P:', tokens=[gpt2_tok.token_text(i) for i in ids], logprobs=lps,
                              sample_logprobs=lps, title='t', pieces=gpt2_tok.pieces(ids))
    units = ov.units()
    assert [t for t, _ in units] == ['Once', ' “', 'upon', '”']
    assert units[1][1] == pytest.approx(math.exp(lps[1] + lps[2]))
    fig = overview.overview_figure(ov)
    drawn = ''.join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert '“upon”' in drawn and '<' not in drawn and '\\x' not in drawn
    common.pyplot().close(fig)
