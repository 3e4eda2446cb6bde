"""``pspsim esp``: IPsec ESP (AES-GCM, RFC 4106) over pcap files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pspsim.cli.capture import dropped, rewrite_capture, skipped
from pspsim.cli.common import UserError, hex_bytes, hex_u32, key_from_file, non_negative_int
from pspsim.wire.errors import WireError
from pspsim.wire.esp import EspSA, NotEspPacket, esp_decapsulate, esp_encapsulate

ESP_SNAPLEN = 65535

ENCRYPT_HELP = """\
Protect every packet of IN.pcap with one ESP SA (AES-GCM with a 16-byte ICV,
RFC 4106) and write OUT.pcap.  --key is the key followed by the 4-byte salt,
in hex (20, 28 or 36 bytes), the layout 'ip xfrm state ... aead
"rfc4106(gcm(aes))" 0xKEYSALT 128' takes, so Wireshark and Linux can decrypt
the output with the same values.  --key-file FILE reads the same hex from a
file (env:NAME: from the environment variable NAME), keeping the key out of
'ps' and the shell history.  Sequence numbers start at --seq (default 1)
and the explicit IV is the 64-bit sequence number; packets left out because
the sequence space ran out make the exit status 1.

Nonce reuse: the IV is the sequence number, so encrypting a second file
with the same key from --seq 1 again reuses every nonce under that key.
Continue with --seq (the summary line says which value) or use a new key."""

DECRYPT_HELP = """\
Verify and decrypt every ESP packet of IN.pcap with one inbound SA, checking
sequence numbers against an anti-replay window (RFC 4303 section 3.4.3).
Packets that verify are written decapsulated.  Every packet that does not is
reported with its reason and the Linux xfrm counter it moves
(XfrmInStateProtoError, XfrmInStateSeqError, XfrmInNoStates, XfrmInHdrError);
the exit status is then 1.  Transport or tunnel mode is read from each packet."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spi", required=True, type=hex_u32, metavar="HEX", help="SPI in hex, e.g. 00001234")
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=hex_bytes((20, 28, 36), "ESP key"), metavar="HEX",
                     help="AES-GCM key + 4-byte salt in hex (20, 28 or 36 bytes)")
    key.add_argument("--key-file", type=Path, metavar="FILE",
                     help="file holding the --key hex (env:NAME: the environment variable NAME)")
    parser.add_argument("--esn", action="store_true", help="extended (64-bit) sequence numbers")
    parser.add_argument("input", type=Path, metavar="IN.pcap")
    parser.add_argument("output", type=Path, metavar="OUT.pcap")


def register(groups: argparse._SubParsersAction) -> None:
    esp = groups.add_parser("esp", help="IPsec ESP packets: encrypt, decrypt",
                            description="IPsec ESP with AES-GCM (RFC 4303, RFC 4106) over pcap files.")
    commands = esp.add_subparsers(dest="esp_command", metavar="SUBCOMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    enc = commands.add_parser("encrypt", help="protect a pcap file with ESP", description=ENCRYPT_HELP,
                              formatter_class=fmt)
    _common(enc)
    enc.add_argument("--mode", choices=("transport", "tunnel"), default="transport", help="default: transport")
    enc.add_argument("--seq", type=non_negative_int, default=None, metavar="N",
                     help="first sequence number (default 1; give the next number the previous run reported when "
                          "encrypting more traffic with the same key)")
    enc.add_argument("--udp-encap", action="store_true", help="ESP in UDP, port 4500 (RFC 3948)")
    enc.add_argument("--tunnel-src", metavar="ADDR", help="outer source address (tunnel mode; default: inner's)")
    enc.add_argument("--tunnel-dst", metavar="ADDR", help="outer destination address (tunnel mode)")
    enc.set_defaults(handler=encrypt_command)

    dec = commands.add_parser("decrypt", help="verify and decrypt ESP in a pcap file", description=DECRYPT_HELP,
                              formatter_class=fmt)
    _common(dec)
    dec.add_argument("--replay-window", type=non_negative_int, default=64, metavar="N",
                     help="anti-replay window in packets: 0 (off) or 32..4096 (default 64)")
    dec.set_defaults(handler=decrypt_command)


def _key(args: argparse.Namespace) -> bytes:
    return args.key if args.key is not None else key_from_file(args.key_file, (20, 28, 36), "ESP key")


def _key_inputs(args: argparse.Namespace) -> list[Path]:
    return [args.key_file] if args.key_file is not None and not str(args.key_file).startswith("env:") else []


def encrypt_command(args: argparse.Namespace) -> int:
    if (args.tunnel_src or args.tunnel_dst) and args.mode != "tunnel":
        raise UserError("--tunnel-src/--tunnel-dst need --mode tunnel")
    first = 1 if args.seq is None else args.seq
    last = (1 << 64) - 1 if args.esn else (1 << 32) - 1
    if not 1 <= first <= last:
        raise UserError(f"--seq must be in 1..{last} (sequence number 0 is never sent"
                        f"{'' if args.esn else '; --esn for 64-bit numbers'})")
    sa = EspSA(args.spi, _key(args), mode=args.mode, esn=args.esn, udp_encap=args.udp_encap,
               tunnel_src=args.tunnel_src, tunnel_dst=args.tunnel_dst, next_seq=first)
    written, tally = rewrite_capture(args.input, args.output, lambda f: esp_encapsulate(f, sa), skipped,
                                     snaplen=ESP_SNAPLEN, inputs=_key_inputs(args))
    seqs = f"sequence {first}..{sa.next_seq - 1}" if written else "no sequence number used"
    print(f"encrypted {written} packets into {args.output} (SPI {args.spi:08x}, {args.mode}, {seqs}); "
          f"skipped {sum(tally.values())}")
    if tally["exhausted"]:
        print(f"pspsim: error: {tally['exhausted']} packets not encrypted: the sequence numbers of SPI "
              f"{args.spi:08x} ran out; use a new SA{'' if args.esn else ' or --esn'}", file=sys.stderr)
    elif args.seq is None and written:
        print(f"pspsim: warning: sequence numbers (the IVs) started at 1 (the default): encrypting more traffic "
              f"with this key reuses nonces unless it continues with --seq {sa.next_seq}", file=sys.stderr)
    return 1 if tally["exhausted"] else 0


def decrypt_command(args: argparse.Namespace) -> int:
    sa = EspSA(args.spi, _key(args), esn=args.esn, replay_window=args.replay_window)

    def describe(exc: WireError) -> tuple[str, str]:
        return ("not ESP", f"skipped: not ESP: {exc}") if isinstance(exc, NotEspPacket) else dropped(exc)

    written, tally = rewrite_capture(args.input, args.output, lambda f: esp_decapsulate(f, {sa.spi: sa}).frame,
                                     describe, snaplen=ESP_SNAPLEN, inputs=_key_inputs(args))
    failures = {k: v for k, v in tally.items() if k not in ("not ESP", "truncated")}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "no drops"
    print(f"decrypted {written} packets into {args.output}; {detail}; "
          f"skipped {tally['not ESP']} not ESP, {tally['truncated']} truncated")
    return 1 if failures else 0
