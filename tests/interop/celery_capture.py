"""Captures the AMQP frames a real celery 5.7 client and worker exchange
with RabbitMQ, for the fixtures the Rust task code is checked against
(amqp-io-common/tests/fixtures/celery/).

    python celery_capture.py OUTPUT_DIRECTORY

Runs two recording TCP proxies in front of the local RabbitMQ, one for a
celery client (this process) and one for a celery worker (a prefork
worker of celery_tasks.py, one process, so time limits apply), sends the
scenarios below and waits for their results. Writes, per side:

    client.frames / worker.frames   every frame, one a line:
                                    "<connection> <direction> <hex of the whole frame>"
                                    (direction ">" client to broker, "<" broker to client)
    client.txt / worker.txt         the same, decoded, with every header's
                                    AMQP type tag, for people to read

The task ids are fixed (see SCENARIOS) so that the fixtures are
reproducible up to times and the client's node name.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

BROKER = ("127.0.0.1", 5672)
HERE = Path(__file__).resolve().parent
QUEUE = "celery.capture"


class Recorder:
    """A TCP proxy to the broker that keeps every byte, per connection
    and direction."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = []  # [{">": bytearray, "<": bytearray}]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(BROKER)
            with self.lock:
                record = {">": bytearray(), "<": bytearray()}
                self.connections.append(record)
            for source, sink, direction in ((client, upstream, ">"), (upstream, client, "<")):
                threading.Thread(target=self.pipe, args=(source, sink, record[direction]),
                                 daemon=True).start()

    def pipe(self, source, sink, record):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                record.extend(data)
            sink.sendall(data)

    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def frames(self):
        """(connection, direction, frame bytes) in each direction's order."""
        out = []
        with self.lock:
            snapshot = [{d: bytes(b) for d, b in c.items()} for c in self.connections]
        for index, record in enumerate(snapshot):
            for direction in (">", "<"):
                data = record[direction]
                if direction == ">" and data.startswith(b"AMQP"):
                    data = data[8:]
                offset = 0
                while offset + 7 <= len(data):
                    kind, channel, size = struct.unpack_from(">BHI", data, offset)
                    end = offset + 7 + size + 1
                    if end > len(data):
                        break
                    out.append((index, direction, data[offset:end]))
                    offset = end
        return out


# The readable decoding: just what the fixtures need.

class Reader:
    def __init__(self, data):
        self.data, self.at, self.bit = data, 0, None

    def take(self, n):
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt):
        self.bit = None
        value = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value[0] if len(value) == 1 else value

    def shortstr(self):
        n = self.unpack(">B")
        return self.take(n).decode("utf-8", "replace")

    def longstr(self):
        n = self.unpack(">I")
        return self.take(n).decode("utf-8", "replace")

    def bits(self, count):
        octet = self.unpack(">B")
        return [bool(octet & (1 << i)) for i in range(count)]

    def table(self):
        n = self.unpack(">I")
        end = self.at + n
        out = {}
        while self.at < end:
            key = self.shortstr()
            out[key] = self.value()
        return out

    def array(self):
        n = self.unpack(">I")
        end = self.at + n
        out = []
        while self.at < end:
            out.append(self.value())
        return out

    def value(self):
        tag = self.take(1).decode()
        readers = {
            "t": lambda: bool(self.unpack(">B")), "b": lambda: self.unpack(">b"),
            "B": lambda: self.unpack(">B"), "s": lambda: self.unpack(">h"),
            "u": lambda: self.unpack(">H"), "I": lambda: self.unpack(">i"),
            "i": lambda: self.unpack(">I"), "l": lambda: self.unpack(">q"),
            "L": lambda: self.unpack(">Q"), "f": lambda: self.unpack(">f"),
            "d": lambda: self.unpack(">d"), "S": self.longstr, "A": self.array,
            "T": lambda: self.unpack(">Q"), "F": self.table, "V": lambda: None,
            "x": lambda: self.take(self.unpack(">I")).hex(),
            "D": lambda: self.unpack(">BI"),
        }
        return [tag, readers[tag]()]


METHODS = {
    (40, 10): ("exchange.declare", ">H s s bits5 F", ["exchange", "type", "passive", "durable", "auto_delete", "internal", "nowait", "arguments"]),
    (50, 10): ("queue.declare", ">H s bits5 F", ["queue", "passive", "durable", "exclusive", "auto_delete", "nowait", "arguments"]),
    (50, 11): ("queue.declare-ok", "s I I", ["queue", "messages", "consumers"]),
    (50, 20): ("queue.bind", ">H s s s bits1 F", ["queue", "exchange", "routing_key", "nowait", "arguments"]),
    (60, 10): ("basic.qos", "I H bits1", ["prefetch_size", "prefetch_count", "global"]),
    (60, 20): ("basic.consume", ">H s s bits4 F", ["queue", "consumer_tag", "no_local", "no_ack", "exclusive", "nowait", "arguments"]),
    (60, 30): ("basic.cancel", "s bits1", ["consumer_tag", "nowait"]),
    (60, 40): ("basic.publish", ">H s s bits2", ["exchange", "routing_key", "mandatory", "immediate"]),
    (60, 60): ("basic.deliver", "s Q bits1 s s", ["consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key"]),
    (60, 70): ("basic.get", ">H s bits1", ["queue", "no_ack"]),
    (60, 71): ("basic.get-ok", "Q bits1 s s I", ["delivery_tag", "redelivered", "exchange", "routing_key", "message_count"]),
    (60, 72): ("basic.get-empty", "", []),
    (60, 80): ("basic.ack", "Q bits1", ["delivery_tag", "multiple"]),
    (60, 90): ("basic.reject", "Q bits1", ["delivery_tag", "requeue"]),
    (60, 120): ("basic.nack", "Q bits2", ["delivery_tag", "multiple", "requeue"]),
}

PROPERTIES = [
    ("content_type", "s"), ("content_encoding", "s"), ("headers", "F"),
    ("delivery_mode", ">B"), ("priority", ">B"), ("correlation_id", "s"),
    ("reply_to", "s"), ("expiration", "s"), ("message_id", "s"),
    ("timestamp", ">Q"), ("type", "s"), ("user_id", "s"), ("app_id", "s"),
    ("cluster_id", "s"),
]


def read_field(reader, kind):
    if kind == "s":
        return reader.shortstr()
    if kind == "S":
        return reader.longstr()
    if kind == "F":
        return reader.table()
    if kind == ">H":
        return reader.unpack(">H")
    if kind in ("I", "Q", "H", ">B", ">Q"):
        return reader.unpack(kind if kind.startswith(">") else ">" + kind)
    raise ValueError(kind)


def describe(frame):
    kind, channel, size = struct.unpack_from(">BHI", frame, 0)
    payload = frame[7:7 + size]
    if kind == 1:
        class_id, method_id = struct.unpack_from(">HH", payload, 0)
        entry = METHODS.get((class_id, method_id))
        if entry is None:
            return None
        name, layout, fields = entry
        reader = Reader(payload[4:])
        values = []
        for kind_ in layout.split():
            if kind_.startswith("bits"):
                values.extend(reader.bits(int(kind_[4:])))
            else:
                values.append(read_field(reader, kind_))
        if layout.startswith(">H"):
            values = values[1:]  # the reserved short
        return {"channel": channel, "method": name, **dict(zip(fields, values))}
    if kind == 2:
        reader = Reader(payload)
        class_id, weight, body_size, flags = reader.unpack(">HHQH")
        properties = {}
        for bit, (name, kind_) in zip(range(15, 0, -1), PROPERTIES):
            if flags & (1 << bit):
                properties[name] = read_field(reader, kind_)
        return {"channel": channel, "content-header": {"body_size": body_size, **properties}}
    if kind == 3:
        return {"channel": channel, "body": payload.decode("utf-8", "replace")}
    return None


def dump(recorder, directory, side):
    frames = recorder.frames()
    with open(directory / f"{side}.frames", "w") as raw:
        for index, direction, frame in frames:
            raw.write(f"{index} {direction} {frame.hex()}\n")
    with open(directory / f"{side}.txt", "w") as text:
        for index, direction, frame in frames:
            described = describe(frame)
            if described is not None:
                text.write(f"{index} {direction} {json.dumps(described)}\n")


SCENARIOS = [
    # (task id, task name, args, kwargs, apply_async options)
    ("00000000-0000-4000-8000-000000000001", "tasks.add", [2, 3], {}, {}),
    # Held by the worker until its eta, by which time it has expired: REVOKED.
    ("00000000-0000-4000-8000-000000000007", "tasks.add", [1, 1], {},
     {"countdown": 2, "expires": 1}),
    ("00000000-0000-4000-8000-000000000002", "tasks.echo", [1, "two", 3.5, None, True],
     {"k": [1, 2], "s": "caf\u00e9"}, {}),
    ("00000000-0000-4000-8000-000000000003", "tasks.fail", ["boom"], {}, {}),
    ("00000000-0000-4000-8000-000000000004", "tasks.add", [20, 22], {},
     {"countdown": 1, "expires": 60, "priority": 7, "time_limit": 30, "soft_time_limit": 20}),
    ("00000000-0000-4000-8000-000000000005", "tasks.sleep", [3], {},
     {"time_limit": 1}),
    ("00000000-0000-4000-8000-000000000006", "tasks.sleep", [3], {},
     {"soft_time_limit": 1}),
    ("00000000-0000-4000-8000-000000000008", "tasks.nope", [], {}, {}),
    ("00000000-0000-4000-8000-000000000009", "tasks.add", [4, 4], {},
     {"ignore_result": True}),
]


def main():
    directory = Path(sys.argv[1])
    directory.mkdir(parents=True, exist_ok=True)
    client_proxy, worker_proxy = Recorder(), Recorder()

    # The worker first, so that it declares the queue before any task.
    env = dict(os.environ, CELERY_BROKER_URL=worker_proxy.url(), CELERY_PREFETCH_MULTIPLIER="1")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "--workdir", str(HERE),
         "worker", "--pool=prefork", "--concurrency=1", "--without-mingle",
         "--without-gossip", "--without-heartbeat", "-l", "warning",
         "-n", "capture@worker", "-Q", QUEUE],
        env=env, stdin=subprocess.DEVNULL)
    try:
        os.environ["CELERY_BROKER_URL"] = client_proxy.url()
        sys.path.insert(0, str(HERE))
        from celery_tasks import app
        from celery.result import AsyncResult

        # Waits until the worker consumes (its pidbox ping answers).
        deadline = time.time() + 60
        while time.time() < deadline:
            if app.control.ping(destination=["capture@worker"], timeout=0.5):
                break
        results = []
        for task_id, name, args, kwargs, options in SCENARIOS:
            results.append(app.send_task(name, args=args, kwargs=kwargs, task_id=task_id,
                                         queue=QUEUE, **options))
        for result in results:
            if result.ignored:
                continue
            try:
                value = result.get(timeout=20, propagate=False)
                print(result.id, result.state, repr(value), flush=True)
            except Exception as error:  # a timeout is worth seeing too
                print(result.id, "error", repr(error), flush=True)
        time.sleep(1)  # the ignored one's execution
        # Protocol 1, as an old client sends it (the app's protocol is
        # fixed once it sent a task, so the message is built directly).
        old_id = "00000000-0000-4000-8000-000000000010"
        message = app.amqp.as_task_v1(old_id, "tasks.add", [5], {"y": 6},
                                      reply_to=app.thread_oid)
        with app.producer_or_acquire() as producer:
            app.amqp.send_task_message(producer, "tasks.add", message, queue=QUEUE)
        old = AsyncResult(old_id, app=app)
        print(old.id, old.get(timeout=20, propagate=False), flush=True)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    time.sleep(0.5)
    dump(client_proxy, directory, "client")
    dump(worker_proxy, directory, "worker")
    # Celery's queue and exchange are durable: leave nothing behind (after
    # the dump, so that this is not in the capture).
    with app.connection_for_write() as connection:
        channel = connection.channel()
        channel.queue_delete(QUEUE)
        channel.exchange_delete(QUEUE)


if __name__ == "__main__":
    main()
