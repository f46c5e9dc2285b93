"""TCP proxies on 127.0.0.1 that add network latency in front of loopback servers: every chunk a
client sends reaches the server DELAY_MS after it was sent (chunks in flight overlap, as on a real
link: a request whose body follows its headers costs one delay, not two), and opening a connection
costs one delay (the TCP handshake; TLS is not modelled). So one HTTP request = one round trip of
DELAY_MS. Used by the scale and latency benchmarks.

    python bench/latency_proxy.py DELAY_MS NAME=PORT... [--log FILE]

prints, one line per NAME=PORT in order, the port its proxy listens on, then serves until killed.
With --log, appends "NAME METHOD PATH SECONDS" (time.monotonic() when it was sent) to FILE for every HTTP/1.x request a client sends (the
requests per server; bench/bench.py truncates the file between runs).
"""

import asyncio
import re
import sys
import time

ACTION = re.compile(rb"[?&\n]Action=([A-Za-z]+)")
METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")


async def pipe(reader, writer, delay, name=None, log=None):
    """Copies reader to writer; with a delay, each chunk is written `delay` after it was read
    (a queue, so chunks in flight overlap). Logs request lines when `log` is set."""
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if log is not None and data.startswith(METHODS):
                line = data.split(b"\r\n", 1)[0].split(b" ")
                path = line[1].decode(errors="replace") if len(line) > 1 else "-"
                action = ACTION.search(data)  # an AWS query API call: name it
                if action:
                    path += "#" + action.group(1).decode()
                log.write(f"{name} {line[0].decode()} {path} {time.monotonic():.4f}\n")
                log.flush()
            await queue.put((time.monotonic() + delay, data))
        await queue.put((0, None))
        await sender
    except (ConnectionError, asyncio.CancelledError):
        sender.cancel()
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


async def serve(name, target_port, delay, log):
    async def handle(client_r, client_w):
        if delay:
            await asyncio.sleep(delay)  # the handshake's round trip
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w, delay, name, log), pipe(server_r, client_w, 0))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def main(delay, targets, log):
    servers = [await serve(name, port, delay, log) for name, port in targets]
    for s in servers:
        print(s.sockets[0].getsockname()[1], flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    args = sys.argv[1:]
    log = None
    if "--log" in args:
        i = args.index("--log")
        log = open(args[i + 1], "a", buffering=1)
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    targets = [(t.split("=", 1)[0], int(t.split("=", 1)[1])) for t in args[1:]]
    asyncio.run(main(float(args[0]) / 1000, targets, log))
