"""Figures: no backend change at import, one style, fixed colours, labelled axes, bands over replications."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from pspsim.figures import STYLE_SHEET, VARIANT_COLORS, comparison_figure, save_figure, validation_figure
from pspsim.scenario import VARIANTS


@pytest.mark.parametrize("backend", [None, "svg", "pdf"])
def test_import_and_drawing_leave_the_backend_alone(backend):
    chosen = f"matplotlib.use({backend!r}); " if backend else ""
    code = ("import sys, matplotlib; import pspsim.figures; assert 'matplotlib.pyplot' not in sys.modules; "
            + chosen + "before = matplotlib.get_backend(); "
            "import pandas as pd, pspsim.figures as f; "
            "fig = f.overhead_figure(pd.DataFrame({'protocol': ['psp'], 'mode': ['transport'], "
            "'ip_version': [4], 'overhead_bytes': [40]})); "
            "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend()); print(before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if backend:
        assert done.stdout.strip() == backend


def test_style_sheet_ships_with_the_package_and_colours_cover_every_variant():
    assert STYLE_SHEET.is_file() and "axes.grid" in STYLE_SHEET.read_text()
    assert set(VARIANT_COLORS) == set(VARIANTS)
    assert len(set(VARIANT_COLORS.values())) == len(VARIANTS)


def _timeseries(replications=3, hosts_rotating=0, windows=30, drop=()):
    rng = np.random.default_rng(1)
    rows = []
    for variant in ("psp", "ipsec-sw", "plaintext"):
        for rep in range(replications):
            for w in range(windows):
                rows.append({"scenario": "t", "variant": variant, "replication": rep, "time_s": 60.0 * (w + 1),
                             "cores_total": {"psp": 5, "ipsec-sw": 20, "plaintext": 4}[variant] + rng.normal(0, 1),
                             "nic_entries_host_max": 100.0 if variant == "psp" else 0.0,
                             "achieved_gbps": 80.0, "command_delay_p99_us": 3.0, "handshakes": 600.0,
                             "rekeys": 60.0 * rng.poisson(2),
                             "rotations": float(hosts_rotating) if variant == "psp" else 0.0})
    return pd.DataFrame(rows).drop(columns=list(drop))


def test_comparison_plots_the_mean_over_replications_with_bands():
    ts = _timeseries()
    fig = comparison_figure(ts)
    assert isinstance(fig, Figure)
    cores = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("CPU cores"))
    line = next(x for x in cores.get_lines() if x.get_color().lower() == VARIANT_COLORS["ipsec-sw"].lower())
    expected = ts[ts["variant"] == "ipsec-sw"].groupby("time_s")["cores_total"].mean().to_numpy()
    np.testing.assert_allclose(line.get_ydata(), expected)
    bands = [c for c in cores.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # one per variant
    # every panel says what and in which unit
    for ax in fig.axes:
        assert ax.get_ylabel() and ax.get_title(loc="left")
    # rates are per second: 600 handshakes per 60-s window
    hs = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("handshakes"))
    assert hs.get_lines()[0].get_ydata() == pytest.approx(np.full(30, 10.0))


def test_one_replication_has_no_band_and_missing_columns_are_skipped():
    ts = _timeseries(replications=1, drop=("command_delay_p99_us", "handshakes", "rotations"))
    fig = comparison_figure(ts)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert not any("delay" in t or "handshakes" in t or "rotations" in t for t in titles)
    assert len(titles) == 4
    assert not any(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def _legends_clear_of_axes(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title(loc="left")


def test_legends_cover_no_panel():
    _legends_clear_of_axes(comparison_figure(_timeseries(hosts_rotating=5)))
    _legends_clear_of_axes(validation_figure(_validation_table()))


def test_rotations_on_ten_thousand_hosts_are_a_density():
    """10,000 hosts rotating daily, staggered: about 7 per minute, every minute; drawn as a rate, not ticks."""
    fig = comparison_figure(_timeseries(replications=2, hosts_rotating=7))
    rot = next(ax for ax in fig.axes if "rotations" in ax.get_title(loc="left"))
    heights = [p.get_height() for p in rot.patches]
    assert len(heights) == 30 and heights == pytest.approx([7.0] * 30)
    assert rot.get_ylabel() == "per minute"


def _validation_table():
    return pd.DataFrame({
        "kind": ["cpu", "cpu", "state", "state", "state"], "variant": ["ipsec-sw"] * 2 + ["ipsec-packet-offload"] * 3,
        "configuration": ["ipsec-sw 1 cores", "ipsec-sw 2 cores", "2000 entries", "2400 entries", "2800 entries"],
        "metric": ["cores", "cores", "gbps", "gbps", "gbps"], "measured": [1.0, 2.0, 190.0, 150.0, 120.0],
        "predicted": [1.02, 1.97, 190.0, 148.0, 123.0], "predicted_stderr": [0.01, 0.02, 0.0, 5.0, 4.0],
        "predicted_out_of_sample": [1.05, 1.9, 175.0, 147.0, 125.0]})


def test_validation_figure_has_error_bars_and_held_out_points():
    fig = validation_figure(_validation_table())
    cpu, state = fig.axes
    assert any(isinstance(c, ErrorbarContainer) for c in cpu.containers)
    assert cpu.get_xlabel().endswith("(%)") and state.get_ylabel() == "throughput (Gb/s)"
    assert any("held out" in t.get_text() for t in state.get_legend().get_texts())


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_saved_in_the_format_its_suffix_names(tmp_path, suffix, magic):
    path = save_figure(comparison_figure(_timeseries(replications=1)), tmp_path / f"c{suffix}")
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"c{suffix}"]  # no temporary left behind


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="figure format"):
        save_figure(comparison_figure(_timeseries(replications=1)), tmp_path / "c.jpg")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("first", ["", "import matplotlib.pyplot as plt\n%matplotlib inline\n"])
def test_a_returned_figure_shows_inline_in_a_real_kernel(tmp_path, first):
    """A notebook cell that ends with a figure shows it as one image, with or without pyplot's inline backend."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(first + "import pandas as pd\nimport pspsim.figures as figures"),
        nbformat.v4.new_code_cell(
            "table = pd.DataFrame({'protocol': ['psp', 'esp'], 'mode': ['transport'] * 2, 'ip_version': [4, 4],"
            " 'overhead_bytes': [40, 37]})\nfigures.overhead_figure(table)"),
    ]
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = notebook.cells[1].outputs
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1  # shown once, not twice


def test_current_column_names_are_drawn():
    """The fleet model's per-window counters (``*_in_window``) are preferred to the older names."""
    ts = _timeseries(hosts_rotating=3).rename(columns={"handshakes": "handshakes_in_window", "rekeys":
                                                       "rekeys_in_window", "rotations": "key_rotations_in_window"})
    ts["psp_stale_events_in_window"] = 0.0
    titles = [ax.get_title(loc="left") for ax in comparison_figure(ts).axes]
    assert any(t.startswith("handshakes") for t in titles) and any(t.startswith("rekeys") for t in titles)
    assert any("stale" in t for t in titles) and any("rotations" in t for t in titles)
    stale = next(ax for ax in comparison_figure(ts).axes if "stale" in ax.get_title(loc="left"))
    assert [t.get_text() for t in stale.texts] == ["none in this run"]  # all zero: said, not an empty axis
