#!/usr/bin/env python3
"""The Python baseline for scripts/bench-syscalls: the original gateway's design (one thread
per machine, pymodbus's ModbusTcpClient, changed values written to InfluxDB), with one
read_holding_registers per entry of "blocks": a planned block, or each register on its own
as the original reads them.

Usage: block_poller.py SPEC.json, where SPEC holds "influx" (http://host:port), "db",
"interval_s", "blocks" ([address, quantity] pairs), "registers" (name, address, type, scale,
length, measurement) and "machines" (name, host, port, unit). Prints "ready" once every
machine is connected; runs until killed."""
import http.client
import json
import struct
import sys
import threading
import time

from pymodbus.client import ModbusTcpClient


def decode(reg, words):
    t = reg["type"]
    if t == "uint16":
        v = words[0]
    elif t == "int16":
        v = struct.unpack(">h", struct.pack(">H", words[0]))[0]
    elif t == "uint32":
        v = (words[0] << 16) | words[1]
    elif t == "float32":
        v = struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0]
    elif t == "string":
        raw = b"".join(struct.pack(">H", w) for w in words)
        return '"' + raw.rstrip(b"\0").decode("latin-1").replace('"', '\\"') + '"'
    else:
        return None
    return repr(v * reg.get("scale", 1))


def width(reg):
    return {"uint32": 2, "float32": 2, "string": reg.get("length", 1)}.get(reg["type"], 1)


def machine_thread(spec, m, ready):
    client = ModbusTcpClient(m["host"], port=m["port"], timeout=1)
    client.connect()
    ready.release()
    host, port = spec["influx"].split("//")[1].split(":")
    influx = http.client.HTTPConnection(host, int(port), timeout=5)
    last = {}
    next_due = time.monotonic()
    while True:
        words = {}
        for address, quantity in spec["blocks"]:
            rr = client.read_holding_registers(address, quantity, slave=m["unit"])
            if rr.isError():
                continue
            for i, w in enumerate(rr.registers):
                words[address + i] = w
        lines = {}
        for reg in spec["registers"]:
            ws = [words.get(reg["address"] + i) for i in range(width(reg))]
            if None in ws:
                continue
            v = decode(reg, ws)
            if v is not None and last.get(reg["name"]) != v:
                last[reg["name"]] = v
                lines.setdefault(reg["measurement"], []).append(f"{reg['name']}={v}")
        if lines:
            now = time.time_ns()
            body = "\n".join(
                f"{meas},machine={m['name']} {','.join(fields)} {now}"
                for meas, fields in lines.items()
            )
            try:
                influx.request("POST", f"/write?db={spec['db']}", body)
                influx.getresponse().read()
            except (OSError, http.client.HTTPException):
                influx.close()
        next_due += spec["interval_s"]
        time.sleep(max(0.0, next_due - time.monotonic()))


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    ready = threading.Semaphore(0)
    for m in spec["machines"]:
        threading.Thread(target=machine_thread, args=(spec, m, ready), daemon=True).start()
    for _ in spec["machines"]:
        ready.acquire()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
