"""Figure text that fits: matplotlib draws a title wider than its figure cut off at the edges."""

__all__ = ["fit_text"]


def fit_text(fig, text, within=None, pad: float = 4.0) -> None:
    """Wrap the centred ``text`` artist of ``fig`` (its title, or an axes' title) onto more lines, and make its
    font smaller (by 10% a step) only when wrapping cannot help (a word alone is too wide, or the room holds
    fewer than 12 characters), until it lies inside the figure (or inside the artist ``within``, e.g. the
    axes under a panel's title), ``pad`` pixels from the left and right edges; it gives up at a font size of
    6 points or after 40 steps. ``fig.tight_layout()`` is redone after each change (it makes room for the
    extra lines). Changes ``text`` and the layout in place; returns None."""
    import textwrap

    original = " ".join(text.get_text().split())
    fig.tight_layout()
    for _ in range(40):
        fig.draw_without_rendering()
        box = text.get_window_extent()
        left, right = (within.get_window_extent().intervalx if within is not None else (0, fig.bbox.width))
        centre = (box.x0 + box.x1) / 2
        room = 2 * (min(centre - left, right - centre) - pad)
        if box.width <= room:
            return
        longest = max(len(line) for line in text.get_text().split("\n"))
        chars = min(longest - 1, int(longest * room / box.width))
        wrapped = (textwrap.fill(original, chars, break_long_words=False, break_on_hyphens=False)
                   if chars >= 12 else None)
        if wrapped is not None and wrapped != text.get_text():
            text.set_text(wrapped)
        elif text.get_fontsize() > 6:  # too narrow to wrap, or a word alone too wide (wrapping changes nothing)
            text.set_fontsize(text.get_fontsize() * 0.9)
        else:
            return
        fig.tight_layout()
