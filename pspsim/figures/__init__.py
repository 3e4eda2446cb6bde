"""Figures: functions that take data and return a matplotlib ``Figure``.

Importing this package never changes the matplotlib backend, and no figure
goes through pyplot: a notebook shows a returned figure inline, a script or
the command line saves it with :func:`save_figure` (PNG, PDF or SVG by the
file's suffix).  Every figure uses the package's style sheet
(``pspsim.mplstyle``) and one fixed colour-blind-safe colour per variant
(:data:`VARIANT_COLORS`).
"""

from __future__ import annotations

import os

import pandas as pd
from matplotlib.figure import Figure

from pspsim.figures.comparison import comparison_figure as _comparison
from pspsim.figures.overhead import overhead_figure as _overhead
from pspsim.figures.style import STYLE, STYLE_SHEET, VARIANT_COLORS, save_figure, style, variant_style
from pspsim.figures.validation import validation_figure as _validation
from pspsim.files import write_csv, write_text

__all__ = ["STYLE", "STYLE_SHEET", "VARIANT_COLORS", "comparison_figure", "overhead_figure", "save_figure", "style",
           "validation_figure", "variant_style", "write_csv", "write_text"]


def _saved(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def comparison_figure(timeseries: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> Figure:
    """See :func:`pspsim.figures.comparison.comparison_figure`; with ``path``, also saved there."""
    return _saved(_comparison(timeseries), path)


def validation_figure(table: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> Figure:
    """See :func:`pspsim.figures.validation.validation_figure`; with ``path``, also saved there."""
    return _saved(_validation(table), path)


def overhead_figure(table: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> Figure:
    """See :func:`pspsim.figures.overhead.overhead_figure`; with ``path``, also saved there."""
    return _saved(_overhead(table), path)
