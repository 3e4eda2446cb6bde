"""The look shared by every figure: style sheet, one colour per variant, saving.

Nothing here touches the matplotlib backend or pyplot's global state:
figures are built as :class:`InlineFigure` objects (matplotlib Figures
that Jupyter shows inline when a cell returns one) and saved by
:func:`save_figure`, whose file suffix picks the format (PNG, PDF, SVG).

Colours are the Okabe-Ito palette (Okabe and Ito, "Color Universal Design",
2008), chosen to stay distinct under the common colour-vision deficiencies;
its yellow, too faint on white, is replaced by black, and plaintext (the
baseline) is grey.  Each protocol family also has its own line style (PSP
solid, IPsec dashed, TLS dash-dot, plaintext dotted), so lines stay
distinct in greyscale print.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure

from pspsim.files import write_atomic

#: The style sheet shipped with the package.
STYLE_SHEET = resources.files("pspsim.figures") / "pspsim.mplstyle"
#: The same settings as a dict, for ``matplotlib.rc_context(STYLE)``.
STYLE = dict(matplotlib.rc_params_from_file(str(STYLE_SHEET), use_default_template=False))

#: One fixed colour per protocol variant, used by every figure.
VARIANT_COLORS = {
    "psp": "#0072B2",  # blue
    "ipsec-sw": "#D55E00",  # vermillion
    "ipsec-crypto-offload": "#E69F00",  # orange
    "ipsec-packet-offload": "#CC79A7",  # reddish purple
    "tls-user": "#009E73",  # bluish green
    "ktls-sw": "#56B4E9",  # sky blue
    "ktls-offload": "#000000",  # black
    "plaintext": "#999999",  # grey
}
VARIANT_LINESTYLES = {
    "psp": "-", "ipsec-sw": "--", "ipsec-crypto-offload": "--", "ipsec-packet-offload": "--",
    "tls-user": "-.", "ktls-sw": "-.", "ktls-offload": "-.", "plaintext": ":",
}
#: Colours for protocols (not variants): the overhead figure.
PROTOCOL_COLORS = {"PSP": VARIANT_COLORS["psp"], "ESP": VARIANT_COLORS["ipsec-sw"],
                   "TLS1.3": VARIANT_COLORS["tls-user"], "TLS1.2": VARIANT_COLORS["ktls-sw"]}
FORMATS = {".png", ".pdf", ".svg"}


def variant_style(variant: str) -> dict[str, Any]:
    """Keyword arguments for ``ax.plot`` that draw ``variant`` in its colour and line style."""
    return {"color": VARIANT_COLORS.get(variant, "#444444"), "linestyle": VARIANT_LINESTYLES.get(variant, "-")}


@contextmanager
def style() -> Iterator[None]:
    """Apply pspsim's style sheet for the duration of a ``with`` block (rcParams restored after)."""
    with matplotlib.style.context(str(STYLE_SHEET)):
        yield


class InlineFigure(Figure):
    """A matplotlib Figure that a notebook shows inline on its own.

    Jupyter shows a pyplot figure through the inline backend's formatters,
    registered only once pyplot is imported.  pspsim draws without pyplot,
    so its figures carry ``_repr_png_``: a cell that ends with one shows it
    once, whether or not the inline backend is active (its formatter, when
    registered, takes precedence; the picture is the same).
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        with style():
            self.savefig(buffer, format="png")
        return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` atomically; the suffix (.png, .pdf, .svg) picks the format."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: figure format must be one of {', '.join(sorted(FORMATS))}")
    with style():
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lower()[1:]))
    pyplot = sys.modules.get("matplotlib.pyplot")  # a figure made through pyplot: release it (no import here)
    if pyplot is not None and getattr(fig.canvas, "manager", None) is not None:
        pyplot.close(fig)
    return path
