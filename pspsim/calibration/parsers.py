"""Parsers for what measurement tools print, so users drop in raw outputs.

Each parser takes the text (and the file name, for messages) and returns
plain numbers; anything it cannot read raises :class:`MeasurementError`
naming the file, the line and the field.

* ``openssl speed -evp aes-128-gcm [-bytes N]``: bytes per second per block size;
* ``iperf3 --json``: bits per second received, seconds, retransmits;
* ``mpstat -o JSON``: busy cores (100 - idle, summed over CPUs);
* ``perf stat -x,``: event counts (cycles, instructions, ...);
* ``ethtool -S``: counter values (take an after-minus-before delta).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pspsim.wire.errors import ConfigError


class MeasurementError(ConfigError):
    """A measurement file cannot be read; the message names file, line and field."""


_SIZE = re.compile(r"(\d+)\s*bytes")
_RATE = re.compile(r"([0-9.]+)k$")


def openssl_speed(text: str, name: str = "openssl speed") -> dict[str, dict[int, float]]:
    """{algorithm: {block bytes: bytes per second}} from ``openssl speed`` output."""
    sizes: list[int] | None = None
    out: dict[str, dict[int, float]] = {}
    for line in text.splitlines():
        if line.startswith("type") and "bytes" in line:
            sizes = [int(s) for s in _SIZE.findall(line)]
            continue
        if sizes is None or not line.strip() or line.startswith(("The '", "+", "version", "built", "options",
                                                                    "compiler", "CPUINFO", "Doing")):
            continue
        fields = line.split()
        rates = fields[-len(sizes):]
        algorithm = " ".join(fields[: -len(sizes)])
        matches = [_RATE.match(r) for r in rates]
        values = [float(m.group(1)) * 1000 for m in matches if m is not None]
        if not algorithm or len(values) != len(sizes):
            continue  # other sections (sign/verify tables) are not block-cipher speeds
        out[algorithm.lower()] = dict(zip(sizes, values))
    if sizes is None or not out:
        raise MeasurementError(f"{name}: no 'type ... bytes' speed table found (is it 'openssl speed' output?)")
    return out


def _json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeasurementError(f"{name}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def iperf3_json(text: str, name: str = "iperf3") -> dict[str, float]:
    """Received throughput (bits/s), duration (s) and retransmits from ``iperf3 --json``."""
    data = _json(text, name)
    try:
        end = data["end"]
        received = end.get("sum_received") or end["sum"]
        return {
            "bits_per_second": float(received["bits_per_second"]),
            "seconds": float(received["seconds"]),
            "bytes": float(received["bytes"]),
            "retransmits": float(end.get("sum_sent", {}).get("retransmits", 0)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise MeasurementError(f"{name}: end.sum_received: missing or not a number ({exc})") from None


def mpstat_json(text: str, name: str = "mpstat") -> float:
    """Busy cores, averaged over the report: sum over CPUs of (100 - %idle) / 100."""
    data = _json(text, name)
    try:
        stats = data["sysstat"]["hosts"][0]["statistics"]
        samples = []
        for entry in stats:
            cpus = [c for c in entry["cpu-load"] if c["cpu"] != "all"]
            if not cpus:  # only the 'all' line: scale by the CPU count
                all_line = entry["cpu-load"][0]
                n = int(data["sysstat"]["hosts"][0]["number-of-cpus"])
                samples.append((100 - float(all_line["idle"])) / 100 * n)
            else:
                samples.append(sum(100 - float(c["idle"]) for c in cpus) / 100)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MeasurementError(f"{name}: sysstat.hosts[0].statistics[].cpu-load: {exc!r}") from None
    if not samples:
        raise MeasurementError(f"{name}: no statistics in the report")
    return sum(samples) / len(samples)


def perf_stat_csv(text: str, name: str = "perf stat") -> dict[str, float]:
    """{event: count} from ``perf stat -x,`` (value,unit,event,...)."""
    out = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            raise MeasurementError(f"{name}:{lineno}: expected 'value,unit,event,...', got {line!r}")
        value, event = fields[0], fields[2]
        if value in ("<not counted>", "<not supported>"):
            continue
        try:
            out[event] = float(value)
        except ValueError:
            raise MeasurementError(f"{name}:{lineno}: {event or 'value'}: {value!r} is not a number") from None
    if not out:
        raise MeasurementError(f"{name}: no counted events")
    return out


def ethtool_stats(text: str, name: str = "ethtool -S") -> dict[str, int]:
    """{counter: value} from ``ethtool -S DEV``."""
    out = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("NIC statistics"):
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise MeasurementError(f"{name}:{lineno}: expected 'counter: value', got {line.strip()!r}")
        try:
            out[key.strip()] = int(value.strip())
        except ValueError:
            raise MeasurementError(f"{name}:{lineno}: {key.strip()}: {value.strip()!r} is not an integer") from None
    return out
