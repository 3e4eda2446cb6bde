"""pspsim: a datacenter simulator comparing PSP with IPsec ESP and TLS.

Layers (see docs/DESIGN.md): ``pspsim.wire`` builds and checks real packet
bytes; the scenario, cost, model, packet-tier, study and calibration layers
build on it, and the command line and figures sit on top.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pspsim")  # the one place it is set is pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
