"""Charts and inspection outputs a user reads: embeddings of models of different widths, tiny moves,
file names per model, and the chart defects found by looking at every PNG."""
import math
import os
import re

import pytest
import torch

from nanoprobs.formatting import file_tag
from nanoprobs.plots import common, evals, internals, overview, steps
from conftest import tiny_model, write_ckpt


def run_embeddings(monkeypatch, tmp_path, capsys, **settings):
    from tools import embeddings
    monkeypatch.chdir(tmp_path)
    for k, v in {'device': 'cpu', 'results_dir': str(tmp_path / 'results'), **settings}.items():
        monkeypatch.setattr(embeddings, k, v)
    embeddings.main()
    return capsys.readouterr().out


def test_align_2d_undoes_a_rotation_reflection_and_scale():
    from tools.embeddings import align_2d
    x = torch.randn(12, 2, dtype=torch.float64)
    x -= x.mean(0)
    t = 0.7
    r = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64)
    y = 3.0 * (x @ r) @ torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)  # turned, mirrored, scaled
    assert torch.allclose(align_2d(y, x), x, atol=1e-10)


def test_embeddings_compare_models_of_different_widths(tmp_path, monkeypatch, capsys, gpt2_tok):
    write_ckpt(tmp_path / 'out')  # 32 channels
    write_ckpt(tmp_path / 'out-wide', tiny_model(seed=1, n_embd=48))
    out = run_embeddings(monkeypatch, tmp_path, capsys, init_from='resume', out_dir='out',
                         compare_init_from='resume', compare_out_dir='out-wide', words='king,queen,dog,cat')
    assert '32-d embeddings and out-wide/ckpt.pt 48-d: no common space' in out
    rows = re.findall(r"^  '(\w+)'\s+1  '(\w+)' -> '(\w+)'", out, re.M)
    assert [r[0] for r in rows] == ['king', 'queen', 'dog', 'cat']
    assert re.search(r'\d of 4 words keep their nearest word', out)
    assert os.path.getsize(tmp_path / 'results' / 'embeddings_out_vs_out-wide.png') > 5000


def test_embedding_scatter_of_separate_maps_draws_no_moves(keep):
    """Two models of different widths are two maps: no arrows, arrow_scale ignored, each red point where
    that model's map has it."""
    import numpy as np
    xy, after = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]), np.array([[0.1, 0.2], [0.9, 1.3], [2.2, 0.4]])
    fig = internals.embedding_scatter(xy, ['a', 'b', 'c'], 'x.png', xy_after=after, arrow_scale=10.0, moves=False)
    ax = fig.axes[0]
    assert not [t for t in ax.texts if getattr(t, 'arrow_patch', None) is not None]
    red = ax.collections[1].get_offsets()
    assert np.allclose(red, after) and '×' not in ax.get_legend().get_texts()[1].get_text()
    fig = internals.embedding_scatter(xy, ['a', 'b', 'c'], 'y.png', xy_after=after, arrow_scale=10.0)  # one space
    assert np.allclose(fig.axes[0].collections[1].get_offsets(), xy + 10 * (after - xy))


def test_embedding_labels_stay_in_the_frame_and_before_points_show(keep):
    """A long label on the right-most point stays inside the frame; before points are rings drawn above
    the after dots, so a word that barely moved shows both."""
    import numpy as np
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 0.5], [4.9, -0.3]])
    fig = internals.embedding_scatter(xy, [' princess', ' dragon', ' grandmother', ' afterwards'], 'x.png',
                                      xy_after=xy + 1e-3)
    ax = fig.axes[0]
    fig.canvas.draw()
    frame = ax.get_window_extent()
    labels = [t for t in ax.texts if t.get_text()]
    assert len(labels) == 4
    for t in labels:
        box = t.get_window_extent()
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, t
    before, after = ax.collections[:2]
    assert before.get_zorder() > after.get_zorder() and before.get_facecolor().size == 0  # rings, on top
    assert before.get_sizes()[0] > after.get_sizes()[0]


def test_embedding_moves_keep_significant_digits(tmp_path, monkeypatch, capsys, gpt2_tok):
    write_ckpt(tmp_path / 'out')
    after = tiny_model()
    with torch.no_grad():
        after.transformer.wte.weight.mul_(1 + 1e-5)  # a tiny move, as after a short fine-tuning
    write_ckpt(tmp_path / 'out-after', after)
    out = run_embeddings(monkeypatch, tmp_path, capsys, init_from='resume', out_dir='out',
                         compare_init_from='resume', compare_out_dir='out-after', words='king,queen,dog')
    rows = re.findall(r"^  '(\w+)'\s+1\s+(\S+)\s+(\S+)%", out, re.M)
    assert len(rows) == 3
    for _, moved, rel in rows:
        assert float(moved) > 0 and float(rel) == pytest.approx(1e-3, rel=0.05)  # 1e-5 of the length, in % (float32)


def test_file_tag_names_the_models():
    assert file_tag('gpt2') == 'gpt2'
    assert file_tag('gpt2', 'out-children/ckpt.pt') == 'gpt2_vs_out-children'
    assert file_tag('/models/my model/', None) == 'my-model'


# -----------------------------------------------------------------------------
# the charts, as a user reads them (the figures are kept open and measured instead of saved)

@pytest.fixture
def keep(monkeypatch):
    """save returns the figure, drawn, instead of writing it (patched where each chart module calls it)."""
    def save(fig, path, show=False):
        fig.canvas.draw()
        return fig
    for module in (evals, internals):
        monkeypatch.setattr(module, 'save', save)
    yield
    common.pyplot().close('all')


def inside(fig, artist):
    """The artist's drawn box lies inside the figure."""
    box = artist.get_window_extent(fig.canvas.get_renderer())
    w, h = fig.canvas.get_width_height()
    return box.x0 >= -1 and box.y0 >= -1 and box.x1 <= w + 1 and box.y1 <= h + 1


def test_eval_pairs_ratios_above_the_frame_and_short_legend(keep):
    before, after = [-12.0, -30.5, -8.2, -45.0], [-0.01, -31.5, -2.2, -25.0]
    fig = evals.eval_pairs([f"{i}: prompt" for i in range(1, 5)],
                           {'before: /tmp/pytest-1/test_x/out-before/ckpt.pt': before,
                            'after: /tmp/pytest-1/test_x/out-children/ckpt.pt': after}, 'x.png', 'title')
    ax = fig.axes[0]
    frame = ax.get_window_extent()
    ratios = [t for t in ax.texts if t.get_text().startswith('×')]
    assert len(ratios) == 4
    for t in ratios:  # above the frame, not crossing it, and inside the figure
        assert t.get_window_extent().y0 >= frame.y1 and inside(fig, t)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['before: out-before', 'after: out-children']
    assert inside(fig, ax._left_title)
    # dots at log10 p, no bars: a bar on a log axis would measure only the distance to the axis' floor
    assert not ax.patches
    ring, dot = (c.get_offsets() for c in ax.collections)
    for pts, lps in ((ring, before), (dot, after)):
        assert [tuple(p) for p in pts] == pytest.approx([(i, lp / math.log(10)) for i, lp in enumerate(lps)])
    assert ax.get_ylim()[0] > min(before + after) / math.log(10) - 2.5  # the axis starts near the data


def test_eval_token_changes_one_sided_axis_and_title_fits(keep):
    long = ('tokens whose probability changed most: /tmp/pytest-of-root/pytest-12/test_eval0/out-before/ckpt.pt'
            ' → /tmp/pytest-of-root/pytest-12/test_eval0/out-children-finetuned/ckpt.pt')
    fig = evals.eval_token_changes([(' castle', 1, 2.3), ('.', 3, 0.05)], 'x.png', long)
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 2.3  # every token gained: no empty negative half
    assert inside(fig, ax.title) and '/tmp' not in ax.get_title() and 'out-children-finetuned' in ax.get_title()
    fig = evals.eval_token_changes([(' castle', 1, 2.3), ('.', 3, -0.5)], 'x.png', 'mixed')
    lo, hi = fig.axes[0].get_xlim()
    assert lo == -hi


def test_overview_steps_are_whole_numbers():
    lp = [-0.2, -3.0, -8.0]  # three steps: matplotlib alone ticks 1, 1.5, 2, 2.5, 3
    fig = overview.overview_figure(overview.SampleOverview(prompt='Hi', tokens=list('abc'), logprobs=lp,
                                                     sample_logprobs=lp, title='t'))
    ax = fig.axes[-1]
    ticks = [x for x in ax.get_xticks() if ax.get_xlim()[0] <= x <= ax.get_xlim()[1]]
    assert ticks and all(float(x).is_integer() for x in ticks)
    common.pyplot().close(fig)


def test_overview_shades_tokens_with_the_page_scale():
    """One scale for one quantity: the overview PNG gives a token of probability p the colour of the page's
    class for p (web/scale.json's buckets), one probability in each bucket, edges included."""
    from matplotlib.colors import to_hex
    from nanoprobs import html_report
    ps = [0.0005, 0.001, 0.02, 0.07, 0.1, 0.4, 0.6, 0.9]  # bucket i holds ps[i]; 0.001 and 0.1 are edges
    lp = [math.log(p) for p in ps]
    fig = overview.overview_figure(overview.SampleOverview(prompt='', tokens=[f"t{i} " for i in range(8)],
                                                           logprobs=lp, sample_logprobs=lp, title='t'))
    shades = [to_hex(c) for c in fig.axes[0].collections[0].get_facecolors()]
    common.pyplot().close(fig)
    css, _ = html_report.render(dict(kind='sample', title='x', settings=[], docs=[]))
    page = [re.search(rf"--v{i}: (#[0-9a-f]{{6}});", css)[1] for i in range(8)]
    assert all(f".c-p{i} {{ background: var(--v{i});" in css for i in range(8))
    assert shades == page and len(set(page)) == 8


def test_step_chart_small_chosen_bar_is_marked_and_columns_align(gpt2_tok):
    from nanoprobs.decoding import Step
    ids, lps = [13, 11, 290, 262], [-0.01, -6.0, -6.5, -7.0]
    chart = steps.StepChart(4)
    try:
        step = Step(top_ids=ids, top_logprobs=lps, top_sample_logprobs=lps, chosen=290, chosen_logprob=-6.5,
                    chosen_sample_logprob=-6.5, chosen_rank=3, entropy=1.0, sample_entropy=1.0)
        chart.render(steps.step_bars(step, gpt2_tok))
        assert list(chart.mark.get_ydata()) == [2]  # p = 0.0015: a marker where its bars would be
        step = Step(top_ids=ids, top_logprobs=lps, top_sample_logprobs=lps, chosen=13, chosen_logprob=-0.01,
                    chosen_sample_logprob=-0.01, chosen_rank=1, entropy=1.0, sample_entropy=1.0)
        chart.render(steps.step_bars(step, gpt2_tok))
        assert list(chart.mark.get_ydata()) == []
        # a forced token far outside the top k, with a probability below float64's range
        step = Step(top_ids=ids, top_logprobs=lps, top_sample_logprobs=lps, chosen=50, chosen_logprob=-1000.0,
                    chosen_sample_logprob=float('-inf'), chosen_rank=41250, entropy=1.0, sample_entropy=1.0)
        chart.render(steps.step_bars(step, gpt2_tok, forced=True))
        rows = [t.get_text() for t in chart.values if t.get_text()] + [chart.header.get_text()]
        assert len(rows) == 6 and '5.08e-435' in rows[4]
        for r in rows:  # every row's two columns end at the same characters
            assert r[steps.W - 1] != ' ' and r[steps.W] == ' ' and r[2 * steps.W] != ' '
    finally:
        chart.close()


def test_attention_close_up_masks_future_cells(keep):
    import numpy as np
    T = 5
    a = np.tril(np.ones((T, T)))
    a /= a.sum(1, keepdims=True)
    fig = internals.attention_head(a, list('abcde'), 'x.png', title='layer 0, head 0')
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    assert img.mask[0, 1] and img.mask[3, 4] and not img.mask[4, 0]  # future keys masked, not drawn as 0
    assert tuple(ax.images[0].get_cmap().get_bad()[:3]) != (1.0, 1.0, 1.0)  # and not white like a zero weight
    (hatch,) = [p for p in ax.patches if p.get_hatch()]
    path = hatch.get_path()
    for r in range(T):  # the hatching covers exactly the masked cells: right of the diagonal
        for c in range(T):
            assert path.contains_point((c, r)) == (c > r), (r, c)
    for artist in (ax.xaxis.label, ax.title):  # with a 3-token prompt too
        assert inside(fig, artist)
    fig = internals.attention_head(a[:3, :3], list('abc'), 'y.png', title='layer 0, head 0: row = query token, '
                               'column = key token')
    assert inside(fig, fig.axes[0].xaxis.label) and inside(fig, fig.axes[0].title)
    near_one = np.array([[1.0, 0, 0], [0.001, 0.999, 0], [0.5, 0.25, 0.25]])  # 0.999 rounds to 1, not '.00'
    cells = [t.get_text() for t in internals.attention_head(near_one, list('abc'), 'z.png').axes[0].texts]
    assert cells == ['1', '1', '.50', '.25', '.25']


def test_logit_lens_title_fits_a_small_model(keep):
    import numpy as np
    fig = internals.logit_lens_table([['a', 'b']] * 2, np.full((2, 2), 0.5), ['embeddings', 'block 0'], ['x', 'y'],
                                 'x.png', title='logit lens of out-children-small: top next-token prediction per '
                                 'layer (blue box = the actual next token)')
    title = fig.axes[0]._left_title  # the title is drawn at the left (loc='left')
    assert 'actual next token' in title.get_text() and inside(fig, title)
