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

Misbehaviour, per unit id (keys are unit ids as strings):
- "exceptions": {"2": {"code": 11, "times": 3}} answers every read of unit 2 (or its first
  `times` reads) with that exception code (0x0B gateway target failed to respond, 0x0A gateway
  path unavailable, 0x06 busy, ...);
- "max_read": {"3": 16} answers reads of more than 16 registers or bits with exception 03;
- "max_read_silent": {"4": 16} never answers them (the reply comes after 30 s);
- "counters": {"1": [40]}: holding register 40 of unit 1 goes up by one at every read of it;
- "ignore_missing": true: a unit not in "slaves" stays silent (default: exception 0x0B).
"trace": PATH appends "UNIT FUNCTION" for every request received (to prove what was sent).
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
from pymodbus.pdu import ExceptionResponse
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

    def __init__(self, *args, delay=0.0, silent_above=None, counters=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.silent_above = silent_above
        self.counters = counters

    async def async_getValues(self, fc_as_hex, address, count=1):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.silent_above is not None and count > self.silent_above:
            await asyncio.sleep(30)
        if fc_as_hex == 3:
            for a in self.counters:
                if address <= a < address + count:
                    old = self.getValues(3, a, 1)[0]
                    self.setValues(3, a, [(old + 1) & 0xFFFF])
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
            silent_above=spec.get("max_read_silent", {}).get(unit),
            counters=spec.get("counters", {}).get(unit, []),
        )
    return ModbusServerContext(slaves=slaves, single=False)


def misbehaviour(spec):
    """The request tracer and response manipulator that implement the misbehaviour keys."""
    exceptions = {int(u): dict(e) for u, e in spec.get("exceptions", {}).items()}
    max_read = {int(u): n for u, n in spec.get("max_read", {}).items()}
    trace = spec.get("trace")

    def tracer(request, *_addr):
        if trace:
            with open(trace, "a") as f:
                f.write(f"{request.slave_id} {request.function_code} {getattr(request, 'address', '')} {getattr(request, 'count', '')}\n")

    def manipulator(response):
        unit = response.slave_id
        fc = response.function_code & 0x7F
        code = None
        e = exceptions.get(unit)
        if e is not None and e.get("times", 1) > 0:
            code = e["code"]
            if "times" in e:
                e["times"] -= 1
        limit = max_read.get(unit)
        if code is None and limit is not None and not response.function_code & 0x80:
            values = getattr(response, "registers", None)
            if values is None:
                values = getattr(response, "bits", [])
            # Bits come padded to whole bytes: only registers are compared exactly.
            if len(values) > limit + (7 if fc in (1, 2) else 0):
                code = 3
        if code is None:
            return response, False
        out = ExceptionResponse(fc, code)
        out.transaction_id = response.transaction_id
        out.slave_id = unit
        return out, False

    return dict(
        request_tracer=tracer,
        response_manipulator=manipulator,
        ignore_missing_slaves=bool(spec.get("ignore_missing")),
    )


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
            bytesize=8, parity="N", stopbits=1, timeout=0.005, **misbehaviour(spec),
        )
    else:
        await StartAsyncTcpServer(
            context=context, address=("127.0.0.1", args.port),
            framer="rtu" if args.mode == "rtu-tcp" else "socket", **misbehaviour(spec),
        )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
