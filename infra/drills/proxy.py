"""A TCP proxy that can be cut: a network partition between one process and one server.

Each region's node reaches ZooKeeper through its own proxy, so a drill can cut exactly one
region off while it keeps running and keeps answering its clients. Cut means what a partition
does: every open connection goes silent (nothing is forwarded, nothing is closed), and new
connections are accepted but never answered, so the client notices only by its own timeouts.
Heal forwards again; the silent connections stay dead, as after a real partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class PartitionProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`target_port`, cut and healed from any thread."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self._cut = threading.Event()
        self._generation = 0  # connections of an older generation were cut: they stay silent
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"proxy-{port}", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> PartitionProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"proxy on port {self.port} did not start")
        return self

    def cut(self) -> None:
        self._generation += 1
        self._cut.set()

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(stop)
            self._thread.join(5)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        with contextlib.suppress(Exception):
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while self._cut.is_set():  # a partitioned peer: accepted, never answered
                await asyncio.sleep(0.05)
            generation = self._generation
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, generation),
                self._pipe(up_reader, writer, generation),
            )
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if generation != self._generation:
                    # cut while open: swallow everything from now on, like dropped packets
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
