"""``siamese_detr.utils.figure_text.fit_text``: a title too wide for its figure is wrapped at spaces (font
kept) while wrapping helps, its font made smaller only when a word alone is too wide, and it ends inside the
figure (or inside the ``within`` artist) either way."""
import pytest

from siamese_detr.utils.figure_text import fit_text


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _extent(fig, text):
    fig.draw_without_rendering()
    return text.get_window_extent()


def test_short_words_are_wrapped_with_the_font_kept(plt):
    """A 300-pixel figure and a ~600-pixel title of short words: more lines, same font, inside the figure
    (4 px from its edges)."""
    fig = plt.figure(figsize=(3, 2), dpi=100)
    title = fig.suptitle("a title made of many short words that is far too wide for this small figure to hold")
    assert _extent(fig, title).width > fig.bbox.width
    fit_text(fig, title)
    box = _extent(fig, title)
    assert title.get_fontsize() == 12.0 and title.get_text().count("\n") >= 1
    assert box.x0 >= 4 - 0.5 and box.x1 <= fig.bbox.width - 4 + 0.5


def test_a_word_alone_too_wide_makes_the_font_smaller_until_it_fits(plt):
    """One 58-character word (a run folder's name as a panel title) is ~520 px at 12 pt: no wrapping can
    help, so the font shrinks (by 0.9 per step) until the word lies inside the 300-pixel figure."""
    fig = plt.figure(figsize=(3, 2), dpi=100)
    title = fig.suptitle("siamese_detr_pretrain_imagenet_seed0_60ep_lr1e-4_finetune")
    fit_text(fig, title)
    box = _extent(fig, title)
    assert "\n" not in title.get_text() and 5 < title.get_fontsize() < 12
    assert box.x0 >= 4 - 0.5 and box.x1 <= fig.bbox.width - 4 + 0.5


def test_a_panel_title_fits_above_its_own_axes(plt):
    """``within=axes``: the title of the left of two panels ends inside that panel's x-range, not just
    inside the figure."""
    fig, (left, _) = plt.subplots(1, 2, figsize=(6, 2), dpi=100)
    left.set_title("a long panel title of short words that would run over into the panel next to it")
    fit_text(fig, left.title, within=left)
    box, axes = _extent(fig, left.title), left.get_window_extent()
    assert axes.x0 - 0.5 <= box.x0 and box.x1 <= axes.x1 + 0.5 and "\n" in left.title.get_text()
