"""A loopback TCP proxy that delays every byte by half the round trip each way (B2).

    python bench/latency_proxy.py LISTEN_PORT TARGET_PORT RTT_MS

Bytes keep their order and the bandwidth is not capped: each chunk is written once its delay has passed,
while the next chunks are already being read."""
import asyncio
import sys
import time


async def pump(reader, writer, delay: float) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def read():
        while True:
            chunk = await reader.read(256 * 1024)
            await queue.put((time.monotonic() + delay, chunk))
            if not chunk:
                return

    async def write():
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen: int, target: int, rtt_ms: float) -> None:
    delay = rtt_ms / 2000

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer, delay), pump(server_reader, client_writer, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
