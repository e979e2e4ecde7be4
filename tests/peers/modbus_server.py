#!/usr/bin/env python3
"""A Modbus server for the integration tests, on pymodbus (an implementation nobody on this
project wrote). The register values are encoded here with Python's `struct`, independently
of the gateway's own encoder, from a JSON spec written by the test:

{"slaves": {"1": [{"kind": "holding", "address": 0, "type": "float32", "order": "CDAB",
                   "value": 123.456}, ...]},
 "sparse": true}

With "sparse", only the addresses in the spec exist: reading a gap answers exception 02
(illegal data address), as strict PLCs do. With "read_delay_s", every read is answered that many seconds
late (a slow HMI or a saturated bus); other connections are served meanwhile. Modes: tcp, rtu-tcp (RTU framing over TCP),
rtu (serial device path). Prints "ready" on stdout once listening.
"""
import argparse
import asyncio
import json
import logging
import struct
import sys

from pymodbus.datastore import (
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
    ModbusSequentialDataBlock,
)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

FORMATS = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
    "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d",
}


def words_for(reg):
    """Register words for one spec entry, bytes arranged by its order."""
    t = reg["type"]
    if t == "string":
        text = reg["value"].encode("ascii")
        n = reg["length"]
        raw = text.ljust(2 * n, b"\0")[: 2 * n]
        pairs = [raw[i:i + 2] for i in range(0, 2 * n, 2)]
        if reg.get("string_order", "high_first") == "low_first":
            pairs = [p[::-1] for p in pairs]
        return [struct.unpack(">H", p)[0] for p in pairs]
    if t == "bit":
        return [(1 << reg["bit"]) if reg["value"] else 0]
    if t == "bool":
        return [1 if reg["value"] else 0]
    raw = struct.pack(FORMATS[t], reg["value"])
    # raw is A B C D ... (most significant first); split into words.
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    order = reg.get("order", "ABCD")
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [struct.unpack(">H", w)[0] for w in words]


class SlowContext(ModbusSlaveContext):
    """A slave whose reads are answered `delay` seconds late, without blocking the server."""

    def __init__(self, *args, delay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay

    async def async_getValues(self, fc_as_hex, address, count=1):
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().async_getValues(fc_as_hex, address, count)


def build_context(spec):
    slaves = {}
    for unit, regs in spec["slaves"].items():
        areas = {"holding": {}, "input": {}, "coil": {}, "discrete_input": {}}
        for reg in regs:
            kind = reg["kind"]
            if kind in ("coil", "discrete_input"):
                areas[kind][reg["address"]] = bool(reg["value"])
                continue
            for i, w in enumerate(words_for(reg)):
                areas[kind][reg["address"] + i] = w
        for addr, value in spec.get("extra", {}).get(unit, {}).items():
            areas["holding"][int(addr)] = value

        def block(values, bits=False):
            if spec.get("sparse"):
                return ModbusSparseDataBlock(values or {0: 0})
            full = [False if bits else 0] * 1000
            for a, v in values.items():
                full[a] = v
            return ModbusSequentialDataBlock(0, full)

        slaves[int(unit)] = SlowContext(
            hr=block(areas["holding"]),
            ir=block(areas["input"]),
            co=block(areas["coil"], True),
            di=block(areas["discrete_input"], True),
            zero_mode=True,
            delay=float(spec.get("read_delay_s", 0)),
        )
    return ModbusServerContext(slaves=slaves, single=False)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--spec", required=True)
    p.add_argument("--mode", choices=["tcp", "rtu-tcp", "rtu"], default="tcp")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--baudrate", type=int, default=9600)
    args = p.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    logging.basicConfig(level=logging.WARNING)
    context = build_context(spec)
    print("ready", flush=True)
    if args.mode == "rtu":
        await StartAsyncSerialServer(
            context=context, framer="rtu", port=args.device, baudrate=args.baudrate,
            bytesize=8, parity="N", stopbits=1, timeout=0.005,
        )
    else:
        await StartAsyncTcpServer(
            context=context, address=("127.0.0.1", args.port),
            framer="rtu" if args.mode == "rtu-tcp" else "socket",
        )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
