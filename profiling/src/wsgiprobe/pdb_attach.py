"""Open a pdb session in worker N of a uWSGI or gunicorn app and attach this terminal to it.

Runs on the app host (as root or the app's user), e.g. ``ssh -t app sudo /srv/app/bin/run-with-env
/srv/app/venv/bin/python -m wsgiprobe.pdb_attach --worker 2``:

1. finds worker N's pid (``wsgiprobe.discovery``: the running server, from the app's env, or
   from ``--uwsgi-stats``/``--gunicorn-record``), or takes ``--pid``;
2. sends SIGUSR1 to exactly that pid (see ``wsgiprobe.pdbhook``), and connects to
   host:base-port+N as soon as the worker listens there: the first connection is the session;
3. if the port is not open after ~2 s the worker is idle (uWSGI runs the handler at its next
   request) or blocked outside Python: with ``--poke URL`` it sends a few requests at a time to
   URL until the port opens. While waiting it re-sends SIGUSR1 every few seconds, because a uWSGI
   worker that has not served a request yet still has uWSGI's own handler;
4. sends ``WSGIPROBE_PDB_SECRET`` (from this process's environment: the deploy's attach command
   reads the app's env file) as the first line, which the worker requires before it answers;
5. bridges the terminal to the session (line mode), or with ``--script`` sends the commands of a
   file (or ``-``: stdin) one per prompt and prints the transcript.

Exit codes: 0 session done, 1 the port never opened within --wait, 2 usage or discovery error,
3 the session broke off (the worker refused the secret; --script: no prompt within
--prompt-timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

from wsgiprobe import pdbhook
from wsgiprobe.discovery import DiscoveryError, add_source_arguments, discover
from wsgiprobe.workers import pid_alive

EXIT_OK = 0
EXIT_NO_PORT = 1
EXIT_USAGE = 2
EXIT_SESSION = 3

PROMPT = b"(Pdb) "
IDLE_AFTER = 2.0  # seconds without a port before the worker is called idle
RESIGNAL_EVERY = 3.0
POKERS = 4


# -- waiting for the port ------------------------------------------------------------------------


def try_connect(host: str, port: int, timeout: float = 1.0) -> socket.socket | None:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None


class Poker:
    """A few concurrent GETs to URL, again and again, until stopped: wakes an idle worker."""

    def __init__(self, url: str, concurrency: int = POKERS, pause: float = 0.05) -> None:
        self.url = url
        self.pause = pause
        self.stop_event = threading.Event()
        self.sent = 0
        self._lock = threading.Lock()
        # Loopback targets must not go through an http_proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.threads = [
            threading.Thread(target=self._run, name=f"poke-{i}", daemon=True)
            for i in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            with self._lock:
                self.sent += 1
            # A request held by the worker being debugged just ends with the session.
            with contextlib.suppress(Exception), self._opener.open(self.url, timeout=5) as reply:
                reply.read()
            self.stop_event.wait(self.pause)


def wait_for_session(
    host: str,
    port: int,
    pid: int,
    worker: int,
    wait: float,
    poke: str | None,
    err: TextIO,
) -> socket.socket | None:
    start = time.monotonic()
    deadline = start + wait
    last_signal = start
    poker: Poker | None = None
    announced = False
    try:
        while True:
            sock = try_connect(host, port)
            if sock is not None:
                return sock
            now = time.monotonic()
            if now >= deadline:
                return None
            if not announced and now - start >= IDLE_AFTER:
                announced = True
                print(
                    f"worker {worker} (pid {pid}) is idle: the session opens at its next request"
                    + (f"; poking {poke}" if poke else "")
                    + f" (waiting up to {wait:g}s)",
                    file=err,
                    flush=True,
                )
                if poke:
                    poker = Poker(poke)
                    poker.start()
                last_signal = now - RESIGNAL_EVERY + 1.0  # first re-send 1 s into the poking
            if announced and now - last_signal >= RESIGNAL_EVERY:
                # uWSGI's own handler ate the first one if the worker had served no request yet.
                last_signal = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(0.1)
    finally:
        if poker is not None:
            poker.stop()


# -- the session ---------------------------------------------------------------------------------


def authenticate(sock: socket.socket, secret: str, timeout: float) -> bytes | None:
    """Send the secret line; what the worker answers up to its first line break (pdb's banner,
    maybe more), or None if it refused."""
    sock.settimeout(timeout)
    first = b""
    try:
        sock.sendall(secret.encode("ascii") + b"\n")
        while b"\n" not in first and len(first) < 65536:
            data = sock.recv(4096)
            if not data:
                break
            first += data
    except OSError as error:
        print(f"pdb_attach: the session broke off: {error}", file=sys.stderr)
        return None
    if not first or first.startswith(pdbhook.REFUSED.encode()):
        reason = first.decode("utf-8", "replace").strip() or "the worker closed the connection"
        print(f"pdb_attach: {reason}", file=sys.stderr)
        return None
    return first


def bridge(sock: socket.socket, stdin_fd: int, out: Any) -> int:
    """A small line-mode telnet: stdin -> socket, socket -> stdout, until the socket closes."""
    sock.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "sock":
                    data = sock.recv(65536)
                    if not data:
                        return EXIT_OK
                    out.write(data)
                    out.flush()
                else:
                    data = os.read(stdin_fd, 65536)
                    if data:
                        sock.sendall(data)
                    else:  # end of input: pdb reads EOF and lets the worker go on
                        selector.unregister(stdin_fd)
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_WR)
    except KeyboardInterrupt:
        print("\ndetached: the worker goes on", file=sys.stderr)
        return EXIT_OK
    except OSError as error:
        print(f"session closed: {error}", file=sys.stderr)
        return EXIT_OK
    finally:
        selector.close()
        sock.close()


def run_script(
    sock: socket.socket, commands: Sequence[str], out: Any, timeout: float, received: bytes = b""
) -> int:
    """Send each command after a "(Pdb) " prompt; write everything, commands echoed, to out.

    ``received``: what the session sent already (read by authenticate), written first.
    """
    sock.settimeout(timeout)
    out.write(received)
    out.flush()
    buffer = received[-64:]

    def until_prompt() -> bool | None:
        # True at a prompt, False when the session closed, None on timeout.
        nonlocal buffer
        while not buffer.endswith(PROMPT):
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                data = b""
            if not data:
                return False
            out.write(data)
            out.flush()
            buffer = (buffer + data)[-64:]
        return True

    try:
        for command in commands:
            state = until_prompt()
            if state is None:
                print(f"no pdb prompt within {timeout:g}s", file=sys.stderr)
                return EXIT_SESSION
            if not state:
                return EXIT_OK
            buffer = b""
            line = command.encode("utf-8") + b"\n"
            out.write(line)
            out.flush()
            sock.sendall(line)
        # Commands done and the session still open: EOF detaches it; print what follows.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        buffer = b""
        while until_prompt():
            buffer = b""
        return EXIT_OK
    except OSError as error:
        print(f"session closed: {error}", file=sys.stderr)
        return EXIT_OK
    finally:
        sock.close()


def script_commands(text: str) -> list[str]:
    # Blank lines would repeat pdb's last command: skip them, and #-comments.
    return [
        line.rstrip("\r")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


# -- main ----------------------------------------------------------------------------------------


def build_parser(defaults: pdbhook.PdbSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wsgiprobe.pdb_attach",
        description="Send SIGUSR1 to one app worker and attach to the pdb session it opens.",
    )
    parser.add_argument("--worker", type=int, default=1, help="worker index, 1-based (1)")
    source = add_source_arguments(parser)
    source.add_argument("--pid", type=int, help="signal this pid; no discovery")
    parser.add_argument("--host", default=defaults.host, help="the workers' pdb host (%(default)s)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=defaults.base_port,
        help="worker N listens on BASE_PORT + N (%(default)s)",
    )
    parser.add_argument("--poke", metavar="URL", help="requests that wake an idle worker")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the port (%(default)s)"
    )
    parser.add_argument("--script", metavar="FILE", help="pdb commands, one a line; - for stdin")
    parser.add_argument(
        "--prompt-timeout",
        type=float,
        default=60.0,
        help="--script: seconds to wait for each prompt (%(default)s)",
    )
    return parser


def _defaults() -> pdbhook.PdbSettings:
    # The app's own WSGIPROBE_PDB_HOST/BASE_PORT, when this shell has them.
    try:
        host, base_port = pdbhook.address_from_environment(os.environ)
    except ValueError:
        return pdbhook.PdbSettings()
    return pdbhook.PdbSettings(host=host, base_port=base_port)


def find_pid(args: argparse.Namespace) -> int:
    if args.pid is not None:
        if not pid_alive(args.pid):
            raise DiscoveryError(f"no process {args.pid}")
        return int(args.pid)
    return discover(args.uwsgi_stats, args.gunicorn_record).worker_pid(args.worker)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_defaults())
    args = parser.parse_args(argv)
    if args.worker < 1:
        parser.error("--worker must be 1 or more")
    port = args.base_port + args.worker
    if not 1 <= port <= 65535:
        parser.error(f"port {port} (base {args.base_port} + worker {args.worker}) is out of range")
    if args.wait <= 0 or args.prompt_timeout <= 0:
        parser.error("--wait and --prompt-timeout must be positive")
    commands: list[str] | None = None
    if args.script is not None:
        try:
            if args.script == "-":
                text = sys.stdin.read()
            else:
                with open(args.script, encoding="utf-8") as file:
                    text = file.read()
        except OSError as error:
            parser.error(f"--script: {error}")
        commands = script_commands(text)

    try:
        secret = pdbhook.secret_from_environment(os.environ)
    except ValueError as error:
        print(f"pdb_attach: {error} (the deploy's pdb-attach reads it from the app's env file)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        pid = find_pid(args)
    except DiscoveryError as error:
        print(f"pdb_attach: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        print(f"pdb_attach: worker {args.worker} (pid {pid}) is gone", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError:
        print(f"pdb_attach: not allowed to signal pid {pid}: run as root or the app's user",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    print(f"SIGUSR1 sent to worker {args.worker} (pid {pid}); waiting for {args.host}:{port}",
          file=sys.stderr, flush=True)  # fmt: skip

    sock = wait_for_session(args.host, port, pid, args.worker, args.wait, args.poke, sys.stderr)
    if sock is None:
        print(
            f"pdb_attach: {args.host}:{port} did not open within {args.wait:g}s"
            " (is WSGIPROBE_PDB=1 set for the app, and the hook wired?)",
            file=sys.stderr,
        )
        return EXIT_NO_PORT
    banner = authenticate(sock, secret, args.prompt_timeout)
    if banner is None:
        sock.close()
        return EXIT_SESSION
    out = sys.stdout.buffer
    if commands is not None:
        return run_script(sock, commands, out, args.prompt_timeout, banner)
    out.write(banner)
    out.flush()
    return bridge(sock, sys.stdin.fileno(), out)


if __name__ == "__main__":
    sys.exit(main())
