"""pspsim: a datacenter simulator comparing PSP with IPsec ESP and TLS.

Layers (see the README): ``pspsim.wire`` builds and checks real packet bytes;
the simulator layers build on it.
"""

__version__ = "0.1.0"
