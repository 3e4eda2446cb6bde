"""Every command against missing, empty, binary, truncated, oversized and wrong-type inputs.

Each case must end with exit status 2, exactly one line on standard error
starting ``pspsim: error:``, no traceback, and not one file created, changed
or removed in the workspace (outputs point into a folder that does not
exist, so a folder created too early shows up too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pspsim.cli.main import main
from tests.robust_helpers import Workspace, bad_input, make_workspace, snapshot

KINDS_OF_BAD = ("missing", "empty", "binary", "truncated", "oversized", "wrong-type")


def _argv(command: str, ws: Workspace, slot: str | None = None, bad: Path | None = None) -> list[str]:
    """The command line of ``command`` on valid inputs, with input ``slot`` replaced by ``bad``."""
    out = ws.root / "out" / "new"

    def use(name: str, default: Path) -> str:
        return str(bad if slot == name else default)

    return {
        "run": ["run", "-q", "--no-figure", use("scenario", ws.scenario), "-o", str(out / "results")],
        "crosscheck": ["crosscheck", use("scenario", ws.scenario), "-o", str(out / "report.csv")],
        "psp encrypt": ["psp", "encrypt", "--cfg", use("cfg", ws.enc_cfg), use("pcap", ws.clear_pcap),
                        str(out / "e.pcap")],
        "psp decrypt": ["psp", "decrypt", "--cfg", use("cfg", ws.dec_cfg), use("pcap", ws.psp_pcap),
                        str(out / "d.pcap")],
        "psp derive-key --cfg": ["psp", "derive-key", "--cfg", use("cfg", ws.dec_cfg), "--spi", "1"],
        "psp derive-key --master-key-file": ["psp", "derive-key", "--master-key-file",
                                             use("keyfile", ws.master_key_file), "--spi", "1"],
        "esp encrypt": ["esp", "encrypt", "--spi", "1234", "--key-file", use("keyfile", ws.esp_key_file),
                        "--seq", "1", use("pcap", ws.clear_pcap), str(out / "e.pcap")],
        "esp decrypt": ["esp", "decrypt", "--spi", "1234", "--key-file", use("keyfile", ws.esp_key_file),
                        use("pcap", ws.esp_pcap), str(out / "d.pcap")],
        "params show": ["params", "show", use("params", ws.params)],
        "calibrate": ["calibrate", use("measurements", ws.measurements), "--base", use("params", ws.params),
                      "-o", str(out / "p.toml")],
        "validate": ["validate", use("measurements", ws.measurements), "--params", use("params", ws.params),
                     "-o", str(out / "v")],
    }[command]


#: (command, slot, kind of file in that slot, workspace attribute holding a valid one)
SLOTS = [
    ("run", "scenario", "toml", "scenario"),
    ("crosscheck", "scenario", "toml", "scenario"),
    ("psp encrypt", "cfg", "cfg", "enc_cfg"),
    ("psp encrypt", "pcap", "pcap", "clear_pcap"),
    ("psp decrypt", "cfg", "cfg", "dec_cfg"),
    ("psp decrypt", "pcap", "pcap", "psp_pcap"),
    ("psp derive-key --cfg", "cfg", "cfg", "dec_cfg"),
    ("psp derive-key --master-key-file", "keyfile", "keyfile", "master_key_file"),
    ("esp encrypt", "keyfile", "keyfile", "esp_key_file"),
    ("esp encrypt", "pcap", "pcap", "clear_pcap"),
    ("esp decrypt", "keyfile", "keyfile", "esp_key_file"),
    ("esp decrypt", "pcap", "pcap", "esp_pcap"),
    ("params show", "params", "toml", "params"),
    ("calibrate", "measurements", "measurements", "measurements"),
    ("calibrate", "params", "toml", "params"),
    ("validate", "measurements", "measurements", "measurements"),
    ("validate", "params", "toml", "params"),
]


def assert_refused_untouched(capsys, root, argv: list[str]) -> str:
    """``pspsim argv`` fails with one line and leaves everything under ``root`` as it was."""
    before = snapshot(root)
    line = assert_one_line_error(capsys, main(argv))
    assert snapshot(root) == before
    return line


def assert_one_line_error(capsys, status: int, expected: int = 2) -> str:
    captured = capsys.readouterr()
    assert status == expected, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pspsim: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.parametrize("how", KINDS_OF_BAD)
@pytest.mark.parametrize("command, slot, kind, attribute", SLOTS, ids=[f"{c}:{s}" for c, s, _, _ in SLOTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(ws, capsys, command, slot, kind, attribute, how):
    bad = bad_input(kind, how, getattr(ws, attribute), ws.root)
    before = snapshot(ws.root)
    status = main(_argv(command, ws, slot, bad))
    assert_one_line_error(capsys, status)
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("command", ["psp encrypt", "psp decrypt", "esp encrypt", "esp decrypt", "calibrate"])
def test_valid_inputs_work(ws, capsys, command):
    """The matrix's valid workspace really is valid: only the replaced input fails."""
    assert main(_argv(command, ws)) == 0, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["psp", "encrypt"], "the following arguments are required"),
    (["psp", "encrypt", "--cfg"], "expected one argument"),
    (["run", "--pcap", "seven", "x.toml"], "invalid int value"),
    (["esp", "encrypt", "--spi", "1", "--key", "00112233445566778899aabbccddeeff0011zz33", "a", "b"],
     "ESP key is not hex"),
    (["esp", "encrypt", "--spi", "1", "--key-file", "k", "--kye=00112233445566778899aabbccddeeff00112233", "a",
      "b"], "unrecognized arguments"),
    (["esp", "decrypt", "--spi", "1", "--key", "0011223344556677", "a", "b"], "ESP key must be 20"),
    (["psp", "derive-key", "--master-key", "00" * 31 + "zz", "--spi", "1"], "master key is not hex"),
    (["warp"], "invalid choice"),
    ([], "the following arguments are required"),
])
def test_usage_errors_are_one_line_and_never_echo_a_key(capsys, argv, message):
    line = assert_one_line_error(capsys, main(argv))
    assert message in line
    for secret in ("00112233445566778899aabbccddeeff", "0011223344556677", "00" * 31):
        assert secret not in line


def _outputs(ws: Workspace) -> dict[str, tuple[list[str], Path]]:
    """Commands with one output file, and that output."""
    out = ws.root / "o"
    return {
        "psp encrypt": (["psp", "encrypt", "--cfg", str(ws.enc_cfg), str(ws.clear_pcap)], out / "e.pcap"),
        "psp decrypt": (["psp", "decrypt", "--cfg", str(ws.dec_cfg), str(ws.psp_pcap)], out / "d.pcap"),
        "esp encrypt": (["esp", "encrypt", "--spi", "1234", "--key-file", str(ws.esp_key_file), "--seq", "1",
                         str(ws.clear_pcap)], out / "e.pcap"),
        "overhead -o": (["overhead", "--payload", "64", "-o"], out / "o.csv"),
        "overhead --plot": (["overhead", "--payload", "64", "--plot"], out / "o.png"),
        "calibrate": (["calibrate", str(ws.measurements), "-o"], out / "p.toml"),
        "crosscheck": (["crosscheck", str(ws.scenario), "-o"], out / "r.csv"),
    }


@pytest.mark.parametrize("command", ["psp encrypt", "psp decrypt", "esp encrypt", "overhead -o",
                                     "overhead --plot", "calibrate", "crosscheck"])
@pytest.mark.parametrize("target", ["folder", "unwritable", "under-a-file", "device"])
def test_bad_output_paths_fail_before_any_work(ws, capsys, command, target):
    argv, _ = _outputs(ws)[command]
    path = {"folder": ws.root / "in",
            "unwritable": Path("/proc/pspsim-no/o.csv"),
            "under-a-file": ws.scenario / "o.csv",
            "device": Path("/dev/null")}[target]
    before = snapshot(ws.root)
    assert_one_line_error(capsys, main([*argv, str(path)]))
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("command, input_attr", [
    ("psp encrypt", "clear_pcap"), ("psp encrypt", "enc_cfg"), ("psp decrypt", "psp_pcap"),
    ("psp decrypt", "dec_cfg"), ("esp encrypt", "clear_pcap"), ("esp encrypt", "esp_key_file"),
    ("crosscheck", "scenario"),
])
@pytest.mark.parametrize("link", ["same path", "hard link", "symbolic link"])
def test_an_output_never_overwrites_an_input(ws, capsys, command, input_attr, link):
    argv, _ = _outputs(ws)[command]
    source = getattr(ws, input_attr)
    target = {"same path": source, "hard link": ws.root / "alias", "symbolic link": ws.root / "alias"}[link]
    if link == "hard link":
        target.hardlink_to(source)
    elif link == "symbolic link":
        target.symlink_to(source)
    before = snapshot(ws.root)
    line = assert_one_line_error(capsys, main([*argv, str(target)]))
    assert "would overwrite the input" in line
    assert snapshot(ws.root) == before


def test_calibrate_refuses_to_overwrite_its_measurements(ws, capsys):
    before = snapshot(ws.root)
    index = ws.measurements / "measurements.toml"
    line = assert_one_line_error(capsys, main(["calibrate", str(ws.measurements), "-o", str(index)]))
    assert "would overwrite the input" in line
    assert snapshot(ws.root) == before


def test_overhead_unknown_figure_type_writes_neither_output(ws, capsys):
    (ws.root / "o.csv").write_text("earlier\n")
    before = snapshot(ws.root)
    line = assert_one_line_error(capsys, main(["overhead", "--payload", "64", "-o", str(ws.root / "o.csv"),
                                               "--plot", str(ws.root / "o.bogus")]))
    assert "unknown file type '.bogus'" in line
    assert snapshot(ws.root) == before


def test_validate_output_that_is_a_file(ws, capsys):
    (ws.root / "v").write_text("a file\n")
    before = snapshot(ws.root)
    line = assert_one_line_error(capsys, main(["validate", str(ws.measurements), "--params", str(ws.params),
                                               "-o", str(ws.root / "v")]))
    assert "is not a folder" in line
    assert snapshot(ws.root) == before


def test_run_refuses_a_missing_pcap_host_before_simulating(ws, capsys):
    line = assert_refused_untouched(capsys, ws.root, ["run", str(ws.scenario), "--pcap", "99999", "-o",
                                                      str(ws.root / "r")])
    assert "--pcap host 99999 is not in the fleet (0..3)" in line


def test_run_refuses_to_replace_a_folder_holding_its_scenario(ws, capsys):
    results = ws.root / "r"
    results.mkdir()
    (results / "manifest.json").write_text("{}\n")
    scenario = results / "s.toml"
    scenario.write_text(ws.scenario.read_text())
    line = assert_refused_untouched(capsys, ws.root, ["run", "-q", str(scenario), "-o", str(results)])
    assert "would delete the input" in line


def test_openssl_speed_with_a_malformed_rate(ws, capsys):
    folder = ws.root / "m"
    folder.mkdir()
    (folder / "measurements.toml").write_text('[platform]\nclock_ghz = 2\n[[crypto]]\nfile = "speed.txt"\n')
    (folder / "speed.txt").write_text("type 16 bytes 64 bytes\naes-128-gcm 1.2.3k 100.00k\n")
    before = snapshot(ws.root)
    assert_one_line_error(capsys, main(["calibrate", str(folder), "-o", str(ws.root / "p.toml")]))
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("content, message", [
    ("param = 1\n", "'param' must be tables"),
    ('[param]\n"host.clock_hz" = 3\n', "must be a table"),
    ('[param."host.clock_hz"]\nvalue = "fast"\nunit = "Hz"\nkind = "spec"\nsource = "x"\n', "finite number"),
    ('[param."host.clock_hz"]\nvalue = nan\nunit = "Hz"\nkind = "spec"\nsource = "x"\n', "finite number"),
    ('[param."host.clock_hz"]\nvalue = 1\nunit = 5\nkind = "spec"\nsource = "x"\n', "unit must be a string"),
    ('name = 5\n', "name must be a string"),
])
def test_malformed_parameter_tables(tmp_path, capsys, content, message):
    path = tmp_path / "p.toml"
    path.write_text(content)
    for argv in (["params", "show", str(path)], ["validate", str(tmp_path), "--params", str(path)]):
        line = assert_one_line_error(capsys, main(argv))
        assert message in line or argv[0] == "validate"


@pytest.mark.parametrize("argv", [
    ["run", "/dev/zero"],
    ["crosscheck", "/dev/zero"],
    ["psp", "encrypt", "--cfg", "/dev/zero", "a.pcap", "b.pcap"],
    ["psp", "decrypt", "--cfg", "/dev/zero", "a.pcap", "b.pcap"],
    ["psp", "derive-key", "--master-key-file", "/dev/zero", "--spi", "1"],
    ["esp", "decrypt", "--spi", "1", "--key-file", "/dev/zero", "a.pcap", "b.pcap"],
    ["esp", "encrypt", "--spi", "1", "--key", "00" * 20, "/dev/zero", "b.pcap"],
])
def test_devices_are_not_read_forever(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, main(argv))
    assert list(tmp_path.iterdir()) == []


def test_validate_into_an_unwritable_folder(ws, capsys):
    before = snapshot(ws.root)
    assert_one_line_error(capsys, main(["validate", str(ws.measurements), "--params", str(ws.params),
                                        "-o", "/proc/pspsim-no/v"]))
    assert snapshot(ws.root) == before


def test_error_lines_hide_keys_but_not_numbers():
    from pspsim.cli.main import one_line

    assert one_line("--first-iv 18446744073709551616 does not fit") == "--first-iv 18446744073709551616 does not fit"
    for key in ("00112233445566778899aabbccddeeff", "00:11:22:33:44:55:66:77:88", "0x" + "ab" * 20, "1" * 40,
                "00112233445566778899aabbccddeeff0"):  # an odd length too
        assert one_line(f"bad {key}\nvalue") == "bad <key not shown> value"
