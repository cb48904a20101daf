"""Figures as the tools save them: for tests of what a figure shows (text extents, legends, markers)."""


def figures_at_save(monkeypatch):
    """Record every matplotlib figure as ``savefig`` writes it, drawn with Agg first so that its texts and
    legends have their final window extents; returns the (growing) list of figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    original = plt.Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        figures.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", record)
    return figures
