"""``pspsim psp``: encrypt, decrypt and derive keys as the reference implementation does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pspsim.cli.capture import JUMBO_FRAME, dropped, rewrite_capture, skipped
from pspsim.cli.common import UserError, hex_bytes, hex_u32, keys_from_file, non_negative_int
from pspsim.wire.errors import EncapsulationError, NotPspPacket, WireError
from pspsim.wire.frames import parse_ip
from pspsim.wire.psp_cfg import load_encrypt_config, load_master_keys
from pspsim.wire.psp_kdf import VERSION_NAMES, derive_sa_key, derive_sa_key_from_pair
from pspsim.wire.psp_packet import MAX_IV, PspSender, decapsulate
from pspsim.wire.psp_sa import DeviceKeys

ENCRYPT_HELP = """\
Encrypt every packet of IN.pcap with the SA that the configuration file
describes and write OUT.pcap, byte for byte as the reference implementation
(google/psp psp_encrypt) does: same headers, IV counter, timestamps and file
header.  The configuration file uses the reference's cfg format: master keys
0 and 1, SPI, transport|tunnel, aes-gcm-128|aes-gcm-256 (pspsim also takes
aes-gmac-128|aes-gmac-256), three crypt offsets, vc|no-vc.  Packets that
cannot be encrypted (not IP, crypt offset larger than the packet, ...) are
listed on standard error and left out, as the reference does; --strict
makes that an error.  Packets left out because the IV space ran out make
the exit status 1.

Nonce reuse: IVs start at 1, as in the reference, so encrypting a second
file with the same cfg reuses every nonce under the same key (the XOR of two
ciphertexts is then the XOR of the plaintexts).  Continue a sequence with
--first-iv (the summary line says which value), or use a new SPI."""

DECRYPT_HELP = """\
Verify and decrypt every PSP packet of IN.pcap with the master keys in the
configuration file (a decrypt cfg, or an encrypt cfg whose keys are used) and
write the packets that verify to OUT.pcap.  Every packet that does not verify
is reported with its reason and the counter it moves (rx-auth-fail, rx-error,
rx-bad, as Linux reports them); the exit status is then 1."""

DERIVE_HELP = """\
Print the SA key that a PSP device derives for an SPI (NIST SP800-108 counter
mode, AES-CMAC).  Give --master-key twice (keys 0 and 1; SPI bit 31 picks
one), once (that key is used whatever bit 31 says), --master-key-file with a
file holding one or two keys in hex, one per line (env:NAME reads the
environment variable NAME; either keeps keys out of 'ps' and the shell
history), or --cfg with a cfg file."""


def register(groups: argparse._SubParsersAction) -> None:
    psp = groups.add_parser("psp", help="PSP packets: encrypt, decrypt, derive keys",
                            description="PSP packets, as the reference implementation google/psp builds them.")
    commands = psp.add_subparsers(dest="psp_command", metavar="SUBCOMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    enc = commands.add_parser("encrypt", help="encrypt a pcap file", description=ENCRYPT_HELP, formatter_class=fmt)
    enc.add_argument("--cfg", required=True, type=Path, metavar="FILE", help="reference-format encrypt cfg")
    enc.add_argument("--first-iv", type=non_negative_int, default=None, metavar="N",
                     help="IV of the first packet; +1 per packet (default: 1, as the reference; give the next "
                          "IV the previous run reported when encrypting more traffic with the same cfg)")
    enc.add_argument("--strict", action="store_true", help="exit 1 if any packet could not be encrypted")
    enc.add_argument("input", type=Path, metavar="IN.pcap")
    enc.add_argument("output", type=Path, metavar="OUT.pcap")
    enc.set_defaults(handler=encrypt_command)

    dec = commands.add_parser("decrypt", help="decrypt and verify a pcap file", description=DECRYPT_HELP,
                              formatter_class=fmt)
    keys = dec.add_mutually_exclusive_group(required=True)
    keys.add_argument("--cfg", type=Path, metavar="FILE", help="cfg file holding master keys 0 and 1")
    keys.add_argument("--keys", type=Path, metavar="FILE",
                      help="a host's device keys over time (psp-hostH-keys.csv from 'pspsim run --pcap'): each "
                           "packet is opened with the keys of the period its timestamp falls in")
    dec.add_argument("--direction", choices=("rx", "both"), default="both",
                     help="rx: only packets addressed to the host of --keys (what its NIC receives); "
                          "both (default): every packet")
    dec.add_argument("input", type=Path, metavar="IN.pcap")
    dec.add_argument("output", type=Path, metavar="OUT.pcap")
    dec.set_defaults(handler=decrypt_command)

    der = commands.add_parser("derive-key", help="derive an SA key from master key(s) and SPI",
                              description=DERIVE_HELP, formatter_class=fmt)
    source = der.add_mutually_exclusive_group(required=True)
    source.add_argument("--master-key", action="append", type=hex_bytes(32, "master key"), metavar="HEX",
                        help="256-bit master key in hex; give twice for keys 0 and 1")
    source.add_argument("--master-key-file", type=Path, metavar="FILE",
                        help="file with one or two master keys in hex, one per line (env:NAME: from the environment)")
    source.add_argument("--cfg", type=Path, metavar="FILE", help="cfg file holding master keys 0 and 1")
    der.add_argument("--spi", required=True, type=hex_u32, metavar="HEX", help="SPI in hex, e.g. 9A345678")
    der.add_argument("--version", type=int, choices=sorted(VERSION_NAMES), default=0,
                     help="PSP version: 0 aes-gcm-128 (default), 1 aes-gcm-256, 2 aes-gmac-128, 3 aes-gmac-256")
    der.set_defaults(handler=derive_key_command)



def encrypt_command(args: argparse.Namespace) -> int:
    cfg = load_encrypt_config(args.cfg)
    first_iv = 1 if args.first_iv is None else args.first_iv
    if first_iv > MAX_IV:
        raise UserError(f"--first-iv {first_iv} does not fit in 64 bits")
    sender = PspSender(cfg.sa(), cfg.encap, first_iv=first_iv)

    def seal(frame: bytes) -> bytes:
        # not sent, as in the reference, when over a jumbo frame: checked first, so its IV stays unused
        _, ip_version, _, _, end = parse_ip(frame, EncapsulationError)
        size = end + cfg.encap.overhead(ip_version)
        if size > JUMBO_FRAME:
            raise EncapsulationError(f"encrypted frame of {size} bytes exceeds {JUMBO_FRAME} (jumbo)")
        return sender.seal(frame)

    written, tally = rewrite_capture(args.input, args.output, seal, skipped, inputs=[args.cfg])
    ivs = f"IV {first_iv}..{sender.next_iv - 1}" if written else "no IV used"
    print(
        f"encrypted {written} packets into {args.output} "
        f"(SPI {cfg.spi:08x}, {VERSION_NAMES[cfg.version]}, {cfg.encap.mode}, {ivs}); "
        f"skipped {sum(tally.values())}"
    )
    if tally["exhausted"]:
        print(f"pspsim: error: {tally['exhausted']} packets not encrypted: the IV space of SPI {cfg.spi:08x} ran out; "
              "use a new SPI", file=sys.stderr)
    elif args.first_iv is None and written:
        print(f"pspsim: warning: IVs started at 1 (the default): encrypting more traffic with this cfg reuses "
              f"nonces unless it continues with --first-iv {sender.next_iv}", file=sys.stderr)
    return 1 if (tally["exhausted"] or (tally and args.strict)) else 0


def load_key_periods(path: Path) -> tuple[list[float], list[DeviceKeys], bytes | None, list[Path]]:
    """Start times, device keys, the host's IPv4 address (if given) and the cfg files of a keys CSV."""
    import csv
    import ipaddress

    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    if not rows or not {"start_s", "cfg"} <= set(rows[0]):
        raise UserError(f"{path}: not a keys file (expected columns epoch,start_s,end_s,cfg[,address])")
    starts, keys = [], []
    for row in rows:
        try:
            starts.append(float(row["start_s"]))
        except (TypeError, ValueError):
            raise UserError(f"{path}: start_s {row['start_s']!r} is not a number") from None
        keys.append(DeviceKeys(*load_master_keys(path.parent / row["cfg"])))
    if starts != sorted(starts):
        raise UserError(f"{path}: periods are not in time order")
    address = rows[0].get("address")
    try:
        packed = ipaddress.IPv4Address(address).packed if address else None
    except ValueError:
        raise UserError(f"{path}: address {address!r} is not an IPv4 address") from None
    return starts, keys, packed, [path.parent / row["cfg"] for row in rows]


def decrypt_command(args: argparse.Namespace) -> int:
    import bisect

    from pspsim.cli.capture import PacketTime
    from pspsim.wire.frames import parse_ip

    if args.keys is not None:
        starts, periods, address, key_cfgs = load_key_periods(args.keys)
    else:
        starts, periods, address, key_cfgs = [0.0], [DeviceKeys(*load_master_keys(args.cfg))], None, []
    if args.direction == "rx" and address is None:
        raise UserError("--direction rx needs --keys with an address column (the receiving host)")
    rx_bytes = 0
    clock = PacketTime()

    def open_(frame: bytes) -> bytes:
        nonlocal rx_bytes
        if args.direction == "rx":
            l2, version, hlen, _, _ = parse_ip(frame, NotPspPacket)
            if version != 4 or frame[l2 + 16 : l2 + 20] != address:
                raise NotReceived("not addressed to the host of --keys")
        keys = periods[max(0, bisect.bisect_right(starts, clock.now) - 1)]
        opened = decapsulate(frame, keys)
        rx_bytes += opened.protected_len
        return opened.frame

    def describe(exc: WireError) -> tuple[str, str]:
        if isinstance(exc, NotReceived):
            return "sent", f"skipped: {exc}"
        return ("not PSP", f"skipped: not PSP: {exc}") if isinstance(exc, NotPspPacket) else dropped(exc)

    key_files = [args.cfg] if args.cfg is not None else [args.keys, *key_cfgs]
    written, tally = rewrite_capture(args.input, args.output, open_, describe, inputs=key_files, clock=clock,
                                     quiet=("sent", "not PSP") if args.keys is not None else ())
    print(
        f"decrypted {written} packets into {args.output} (rx-packets {written}, rx-bytes {rx_bytes}); "
        f"rx-auth-fail {tally['rx-auth-fail']}, rx-error {tally['rx-error']}, rx-bad {tally['rx-bad']}; "
        f"skipped {tally['not PSP']} not PSP, {tally['truncated']} truncated"
        + (f", {tally['sent']} not received by the host" if args.direction == "rx" else "")
    )
    return 1 if tally["rx-auth-fail"] + tally["rx-error"] + tally["rx-bad"] else 0


class NotReceived(WireError):
    """A packet the host of --keys sent rather than received (--direction rx)."""


def derive_key_command(args: argparse.Namespace) -> int:
    if args.cfg is not None:
        key = derive_sa_key_from_pair(load_master_keys(args.cfg), args.spi, args.version)
    elif args.master_key_file is not None:
        keys = keys_from_file(args.master_key_file, 32, "master key")
        key = (derive_sa_key_from_pair(tuple(keys), args.spi, args.version) if len(keys) == 2
               else derive_sa_key(keys[0], args.spi, args.version))
    elif len(args.master_key) == 2:
        key = derive_sa_key_from_pair(args.master_key, args.spi, args.version)
    elif len(args.master_key) == 1:
        key = derive_sa_key(args.master_key[0], args.spi, args.version)
    else:
        raise UserError("give --master-key once or twice (keys 0 and 1)")
    print(key.hex())
    return 0
