"""Random streams: one numpy Generator per purpose, shared by every variant.

Common random numbers: every variant of one replication draws its workload,
rotation phases, rekey jitter and rekey delays from the same streams, so a
difference between variants comes from the variants, not from the draws.
Each purpose has its own child of the replication's ``SeedSequence``, so
adding draws for one purpose never shifts another purpose's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PURPOSES = ("workload", "rotation", "rekey_jitter", "rekey_delay", "events", "packets")


@dataclass(frozen=True)
class RandomStreams:
    workload: np.random.Generator  # connections, peers, lifetimes, traffic draws
    rotation: np.random.Generator  # device-key rotation phases
    rekey_jitter: np.random.Generator  # IPsec CHILD_SA rekey jitter and initial phases
    rekey_delay: np.random.Generator  # how long a rekey or reconnect takes to be requested
    events: np.random.Generator  # other control-plane draws (ages of the initial population)
    packets: np.random.Generator  # the packet tier's own draws

    @classmethod
    def from_sequence(cls, seq: np.random.SeedSequence) -> RandomStreams:
        """Fresh generators (call once per run: generators are stateful)."""
        return cls(*(np.random.default_rng(child) for child in seq.spawn(len(PURPOSES))))


def replication_sequence(root_seed: int, replication: int) -> np.random.SeedSequence:
    """Replication ``r``'s sequence: the r-th child of ``SeedSequence(root_seed)``."""
    return np.random.SeedSequence(root_seed, spawn_key=(replication,))


def replication_seed(seq: np.random.SeedSequence) -> int:
    """A 32-bit number that tells replications apart in result rows."""
    return int(seq.generate_state(1, np.uint32)[0])
