"""PSP device-key rotation schedules and association generations (Linux 6.18).

``key-rotate`` bumps a device's generation; associations move active ->
prev -> stale, so an association created (its ``rx-assoc``) at time ``a`` on
a NIC goes stale at the second rotation of that NIC strictly after ``a``
(net/psp/psp_main.c ``psp_assocs_key_rotated``; Documentation/networking/psp.rst).

Schedules (``keys.psp_rotation_schedule``), from the rotation stream:

* ``staggered``: NIC n rotates at ``phi_n + k P`` with ``phi_n ~ U(0, P)``
  (one daemon per host, started at its own time);
* ``synchronized``: every NIC at ``phi + k P`` (one daemon, one cron line);
* ``rack-waves``: NICs of rack r at ``phi + r * gap + k P``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspsim.model.calendar import periodic_bounds
from pspsim.model.sorting import argsort_stable


@dataclass(frozen=True)
class RotationSchedule:
    period: float
    phase: np.ndarray  # (hosts,) in [0, period)

    @classmethod
    def draw(cls, schedule: str, period: float, rack_of: np.ndarray, gap: float,
             rng: np.random.Generator) -> RotationSchedule:
        hosts = len(rack_of)
        if schedule == "staggered":
            phase = rng.uniform(0, period, hosts)
        elif schedule == "synchronized":
            phase = np.full(hosts, rng.uniform(0, period))
        elif schedule == "rack-waves":
            phase = np.mod(rng.uniform(0, period) + rack_of * gap, period)
        else:
            raise ValueError(f"unknown rotation schedule {schedule!r}")
        return cls(period, phase)

    def next_after(self, nic: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The first rotation of ``nic`` strictly after ``t``."""
        phase = self.phase[nic]
        return phase + self.period * (np.floor((t - phase) / self.period) + 1)

    def stale_time(self, nic: np.ndarray, created: np.ndarray) -> np.ndarray:
        """When an association created at ``created`` on ``nic`` goes stale."""
        return self.next_after(nic, created) + self.period

    def between(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Every rotation in [t0, t1): (nics, times), sorted by time.  Rotation ``k`` of a NIC is
        at ``phase + k * period`` and falls in the window whose bounds hold that time
        (:func:`~pspsim.model.calendar.periodic_bounds`), so windows that follow each other take
        each rotation once, inside their bounds."""
        phase, period = self.phase, self.period
        first, last = periodic_bounds(phase, period, t0, t1)
        count = np.maximum(0, last - first + 1).astype(np.int64)
        if not count.any():
            return np.empty(0, np.int64), np.empty(0)
        nic = np.repeat(np.arange(len(phase)), count)
        k = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
        times = phase[nic] + k * period
        order = argsort_stable(times)
        return nic[order], times[order]
