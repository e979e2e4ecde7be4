#!/usr/bin/env python3
"""A fault injector on an RTU bus, for the integration tests: it sits between the gateway's
serial port and a pymodbus RTU server (each side a socat pty pair), forwards each request, and
spoils the replies of chosen slaves by a repeating schedule:

  ok          forward the reply
  garbage     send bytes that are no Modbus frame
  crc         flip the CRC
  wrong_unit  answer as another slave id (with a valid CRC)
  silent      drop the reply

Usage: rtu_mangler.py --gateway PTY --server PTY --faults '{"2": ["garbage", "crc", "ok"]}'
Prints "ready" once both ports are open.
"""
import argparse
import json
import time

import serial


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


def read_exact(port, n, deadline):
    buf = b""
    while len(buf) < n and time.monotonic() < deadline:
        buf += port.read(n - len(buf))
    return buf if len(buf) == n else None


def read_request(port):
    head = port.read(2)
    if len(head) < 2:
        return None
    deadline = time.monotonic() + 0.5
    fc = head[1]
    if fc in (15, 16):
        rest = read_exact(port, 5, deadline)
        if rest is None:
            return None
        tail = read_exact(port, rest[4] + 2, deadline)
        return None if tail is None else head + rest + tail
    rest = read_exact(port, 6, deadline)
    return None if rest is None else head + rest


def read_reply(port, timeout):
    deadline = time.monotonic() + timeout
    head = read_exact(port, 2, deadline)
    if head is None:
        return None
    fc = head[1]
    if fc & 0x80:
        rest = read_exact(port, 3, deadline)
    elif fc in (1, 2, 3, 4):
        n = read_exact(port, 1, deadline)
        if n is None:
            return None
        rest = n + (read_exact(port, n[0] + 2, deadline) or b"")
    else:
        rest = read_exact(port, 6, deadline)
    return None if rest is None else head + rest


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--faults", default="{}")
    args = p.parse_args()
    faults = json.loads(args.faults)
    counters = {}
    gw = serial.Serial(args.gateway, timeout=0.05)
    srv = serial.Serial(args.server, timeout=0.05)
    print("ready", flush=True)
    while True:
        req = read_request(gw)
        if req is None:
            gw.reset_input_buffer()
            continue
        unit = req[0]
        schedule = faults.get(str(unit), ["ok"])
        n = counters.get(unit, 0)
        counters[unit] = n + 1
        fault = schedule[n % len(schedule)]
        srv.reset_input_buffer()
        srv.write(req)
        reply = read_reply(srv, 0.3)
        if reply is None or fault == "silent":
            continue
        if fault == "garbage":
            reply = bytes([unit, 0x55, 0xAA, 0x01, 0xFE])
        elif fault == "crc":
            reply = reply[:-1] + bytes([reply[-1] ^ 0xFF])
        elif fault == "wrong_unit":
            body = bytes([(unit % 247) + 1]) + reply[1:-2]
            reply = body + crc16(body)
        gw.write(reply)


if __name__ == "__main__":
    main()
