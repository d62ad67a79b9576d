"""A TCP proxy on 127.0.0.1 that a test owns and can freeze.

Frozen, it neither reads nor forwards nor accepts, and closes nothing: the
kernel still completes handshakes and acknowledges bytes, exactly what a
client sees of a PostgreSQL server stopped with SIGSTOP (no RST, no answer).
The shared PostgreSQL itself is never touched.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time


class FreezableProxy:
    """Forward 127.0.0.1:<port> to ``target``; ``freeze()`` / ``thaw()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._running = threading.Event()  # set = forwarding
        self._running.set()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._spawn(self._accept_loop)

    def freeze(self) -> None:
        """Stop reading, forwarding and accepting; keep every socket open."""
        self._running.clear()

    def thaw(self) -> None:
        """Resume: queued bytes and connections flow again."""
        self._running.set()

    def close(self) -> None:
        """Stop the proxy and close every socket."""
        self._closed.set()
        self._running.set()
        for thread in self._threads:
            thread.join(timeout=2)
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
        self._listener.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _wait_running(self) -> bool:
        """Block while frozen; return False once closed."""
        while not self._running.wait(0.05):
            pass
        return not self._closed.is_set()

    def _accept_loop(self) -> None:
        while self._wait_running():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peer:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            while self._wait_running():
                for key, _ in selector.select(timeout=0.05):
                    if not self._running.is_set():
                        break  # frozen between select and read: read nothing
                    try:
                        data = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        for sock in peer:
                            sock.close()
                        return
                    try:
                        _send_all(peer[key.fileobj], data)
                    except OSError:
                        for sock in peer:
                            sock.close()
                        return


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[sent:]
