"""Holds K clients x M Server-Sent Events streams open, reading them, then reports as JSON.

Stdlib only, fed on stdin: python3 - --url http://127.0.0.1/events --clients 10 < streams.py
Client i's sockets come from --first-source + i (all of 127.0.0.0/8 is local), so the server
sees K client addresses. One JSON line when every stream has its status ("opened"), then one
when the hold ends or on SIGTERM/SIGINT ("final"). HTTP/1.0: the body is the stream, unchunked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import statistics
import sys
import urllib.parse
from collections import Counter
from dataclasses import dataclass


@dataclass
class Stream:
    status: str = ""  # "200", "429", ... or "timeout", "error"
    events: int = 0
    ended: bool = False  # the server (or the network) ended it before we stopped
    retry_after: str | None = None
    body: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1/events")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--first-source", default="127.0.0.2")
    parser.add_argument("--hold", type=float, default=60, help="seconds, once all are opened")
    parser.add_argument("--stagger", type=float, default=1, help="open them over these seconds")
    parser.add_argument("--timeout", type=float, default=10, help="seconds to wait for a status")
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.url).scheme != "http":
        parser.error("--url: http:// only")
    ipaddress.ip_address(args.first_source)  # a bad address: ValueError now, not per stream
    return args


def sources(first: str, clients: int) -> list[str]:
    return [str(ipaddress.ip_address(first) + i) for i in range(clients)]


def statuses(streams: list[Stream]) -> dict[str, int]:
    return dict(Counter(s.status or "pending" for s in streams))


def opened_line(streams: list[Stream]) -> dict:
    line: dict = {"opened": statuses(streams), "pid": os.getpid()}
    others = [s for s in streams if s.status != "200"]  # an HTTP answer first, if any
    refused = next((s for s in others if s.status.isdigit()), others[0] if others else None)
    if refused is not None:
        line["refused"] = {k: getattr(refused, k) for k in ("status", "retry_after", "body")}
        line["refused"]["status"] = refused.status or "pending"
    return line


def final_line(streams: list[Stream]) -> dict:
    ok = [s.events for s in streams if s.status == "200"]
    return {
        "final": statuses(streams),
        "events_min": min(ok, default=0),
        "events_median": statistics.median(ok) if ok else 0,
        "ended_early": sum(s.ended for s in streams if s.status == "200"),
    }


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The status ("200") and the headers (names in lower case) of a response's head."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines if ":" in line)
    return status_line.split()[1], {k.strip().lower(): v.strip() for k, _, v in fields}


async def hold_one(args: argparse.Namespace, source: str, delay: float, s: Stream) -> None:
    url = urllib.parse.urlsplit(args.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    await asyncio.sleep(delay)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.hostname, url.port or 80, local_addr=(source, 0)),
            args.timeout,
        )
    except (OSError, TimeoutError):
        s.status = "error"
        return
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {url.netloc}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), args.timeout)
        status, headers = parse_head(head)
        if status != "200":
            s.retry_after = headers.get("retry-after")
            body = await asyncio.wait_for(reader.read(2048), args.timeout)
            s.body, s.status = body.decode("utf-8", "replace"), status
            return
        s.status = status
        while line := await reader.readline():
            s.events += line.startswith(b"data:")
        s.ended = True
    except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError) as exc:
        if not s.status:
            s.status = "timeout" if isinstance(exc, TimeoutError) else "error"
        else:
            s.ended = True
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> None:
    total = args.clients * args.per_client
    streams = [Stream() for _ in range(total)]
    addresses = sources(args.first_source, args.clients)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    # Stream n belongs to client n % K: the clients open theirs side by side.
    tasks = [
        asyncio.create_task(
            hold_one(args, addresses[n % args.clients], args.stagger * n / total, s)
        )
        for n, s in enumerate(streams)
    ]
    while not stop.is_set() and not all(s.status for s in streams):
        await asyncio.sleep(0.05)
    print(json.dumps(opened_line(streams)), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.hold)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(final_line(streams)), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(run(parse_args()))
    except BrokenPipeError:
        sys.exit(1)
