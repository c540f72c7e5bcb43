"""The analyses' line plots: one figure layout, written headless (Agg) to a PNG."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def line_figure(path, title: str, xlabel: str, ylabel: str = "", ylim: tuple[float, float] = (0, 1.02)):
    """Yield matplotlib axes to draw lines on; on exit add labels, grid and legend and save ``path`` (PNG)."""
    import matplotlib  # heavy: loaded when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: loaded when used

    fig, ax = plt.subplots(figsize=(6, 3.8))
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(*ylim)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
