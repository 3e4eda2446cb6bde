"""A workspace of valid inputs for every command, bad variants of each, and a file snapshot.

Used by the ``test_robustness_*`` tests: each command is run in-process
(``pspsim.cli.main.main``) against a copy of valid inputs in a temporary
folder, and the folder is compared byte for byte before and after.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from pspsim.costs.params import SETS_DIR
from pspsim.wire import PcapRecord, read_pcap, write_pcap
from pspsim.wire.esp import EspSA, esp_encapsulate
from pspsim.wire.pcap import PcapHeader
from tests.conftest import MASTER_KEY_0, MASTER_KEY_1, VECTORS

PUBLISHED = Path(__file__).parents[1] / "experiments" / "calibration" / "published"
ESP_KEY = bytes(range(20))
BINARY = b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfd" + bytes(range(256)) * 4

TINY_SCENARIO = """\
[run]
name = "tiny"
seed = 3
duration = "5min"
window = "60s"
variants = ["psp", "plaintext"]
[fleet]
racks = 2
hosts_per_rack = 2
[workload]
connections_per_host = { kind = "fixed", mean = 20 }
peers_per_host = 2
connection_lifetime = "5min"
[packets]
duration = "2s"
max_connections = 20
"""


@dataclass
class Workspace:
    root: Path
    scenario: Path
    enc_cfg: Path
    dec_cfg: Path
    clear_pcap: Path
    psp_pcap: Path
    esp_pcap: Path
    esp_key_file: Path
    master_key_file: Path
    params: Path
    measurements: Path


def make_workspace(root: Path) -> Workspace:
    inputs = root / "in"
    inputs.mkdir()
    scenario = inputs / "tiny.toml"
    scenario.write_text(TINY_SCENARIO)
    enc_cfg = inputs / "enc.cfg"
    shutil.copy(VECTORS / "encrypt_transport_crypt_off_128.cfg", enc_cfg)
    dec_cfg = inputs / "dec.cfg"
    shutil.copy(VECTORS / "decrypt.cfg", dec_cfg)
    clear_pcap = inputs / "clear.pcap"
    shutil.copy(VECTORS / "v4_cleartext_n4.pcap", clear_pcap)
    psp_pcap = inputs / "psp.pcap"
    shutil.copy(VECTORS / "encrypted" / "v4_encrypt_transport_crypt_off_128.pcap", psp_pcap)
    header, records = read_pcap(clear_pcap)
    sa = EspSA(0x1234, ESP_KEY)
    esp_pcap = inputs / "esp.pcap"
    write_pcap(esp_pcap, [PcapRecord(r.ts_sec, r.ts_frac, esp_encapsulate(r.data, sa), 0) for r in records],
               PcapHeader())
    esp_key_file = inputs / "esp.key"
    esp_key_file.write_text(ESP_KEY.hex() + "\n")
    master_key_file = inputs / "master.keys"
    master_key_file.write_text(f"{MASTER_KEY_0.hex()}\n{MASTER_KEY_1.hex()}\n")
    params = inputs / "params.toml"
    shutil.copy(SETS_DIR / "cx7-x86-2026.toml", params)
    measurements = inputs / "measurements"
    shutil.copytree(PUBLISHED, measurements)
    return Workspace(root, scenario, enc_cfg, dec_cfg, clear_pcap, psp_pcap, esp_pcap, esp_key_file,
                     master_key_file, params, measurements)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its kind and, for files, a hash of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + str(path.readlink())
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _truncated(kind: str, valid: Path) -> bytes:
    data = valid.read_bytes()
    if kind == "pcap":
        return data[:-5]  # inside the last packet
    if kind in ("toml", "measurements"):
        text = data.decode()
        return text[: text.index('"', text.index("=")) + 3].encode()  # inside a string
    if kind == "cfg":
        return b" ".join(data.split()[:20])  # inside master key 0
    if kind == "keyfile":
        return data[: len(data) // 3]
    raise ValueError(kind)


def _oversized(kind: str, valid: Path) -> bytes:
    data = valid.read_bytes()
    if kind == "pcap":  # a record header claiming a 2 GiB packet
        return data[:24] + (0).to_bytes(8, "little") + (0x7FFF_FFFF).to_bytes(4, "little") * 2 + bytes(64)
    if kind == "toml":
        if b"[param." in data:  # a parameter value past the float range
            return data.replace(b"value = ", b"value = 1e400 #", 1)
        return data.replace(b'mean = 20 }', b'mean = 1e12 }')  # 4e12 connections
    if kind == "measurements":
        return data.replace(b"clock_ghz = 2.3", b"clock_ghz = 1e400")
    if kind == "cfg":
        return data + b" ff" * 400_000
    if kind == "keyfile":
        return data.strip() * 5000 + b"\n"
    raise ValueError(kind)


def bad_input(kind: str, how: str, valid: Path, root: Path) -> Path:
    """A bad stand-in for ``valid`` (a file of ``kind``, or a measurement folder)."""
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    name = valid.name
    if how == "missing":
        return bad / f"missing-{name}"
    if kind == "measurements":
        folder = bad / f"{how}-{name}"
        if how == "wrong-type":  # a file where a folder belongs
            folder.write_text("[platform]\nclock_ghz = 2\n")
            return folder
        folder.mkdir()
        index = valid / "measurements.toml"
        content = {"empty": None, "binary": BINARY, "truncated": _truncated(kind, index),
                   "oversized": _oversized(kind, index)}[how]
        if content is not None:
            (folder / "measurements.toml").write_bytes(content)
        return folder
    path = bad / f"{how}-{name}"
    if how == "wrong-type":  # a folder where a file belongs
        path.mkdir()
        return path
    content = {"empty": b"", "binary": BINARY, "truncated": _truncated(kind, valid),
               "oversized": _oversized(kind, valid)}[how]
    path.write_bytes(content)
    return path
