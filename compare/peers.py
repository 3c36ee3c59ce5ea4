"""The Python peers of amqp-io-std in scripts/compare-peers: pika and py-amqp.

    python peers.py <client> <scenario> <size> <count> <queue>

One run, measured the way the Rust children measure theirs
(compare/src/main.rs): wall time and this process's CPU time (user + sys,
from /proc/self/stat, in clock ticks) around the measured part only, which
starts after the connection and channel are open; one JSON line on stdout:
messages, seconds, cpu, p50_us, p99_us (the latter two for rpc only).

client: pika | py-amqp
scenario: publish | publish-confirm | publish-confirm-each | consume | rpc

The same conventions as the Rust children: publish without confirms ends
with a passive queue.declare on the same channel (so the run lasts until
the broker has processed every publish); confirms keep a window of 1,000
publishes in flight; consume uses a prefetch of 1,000 and one multiple ack
per 100 messages; rpc is sequential direct reply-to round trips against
the server the parent runs.
"""

import collections
import json
import sys
import time

HOST = "127.0.0.1"
PORT = 5672
WINDOW = 1000
PREFETCH = 1000
ACK_EVERY = 100
REPLY_TO = "amq.rabbitmq.reply-to"
TIMEOUT = 120.0


def cpu_seconds():
    """utime + stime of this process from /proc/self/stat, as the Rust
    children read it (clock ticks of 10 ms)."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


class Measure:
    def __init__(self):
        self.started = time.perf_counter()
        self.cpu = cpu_seconds()

    def finish(self, messages, latencies):
        seconds = time.perf_counter() - self.started
        cpu = cpu_seconds() - self.cpu
        latencies.sort()

        def quantile(q):
            if not latencies:
                return 0.0
            index = int(round((len(latencies) - 1) * q))
            return latencies[min(index, len(latencies) - 1)]

        return {
            "messages": messages,
            "seconds": seconds,
            "cpu": cpu,
            "p50_us": quantile(0.5),
            "p99_us": quantile(0.99),
        }


class Confirms:
    """The broker's basic.ack / basic.nack, sorted out for the two confirm
    scenarios (neither library hands out a confirmation per publish in
    this mode, so this is what its user would write):

    - `highest`: the highest delivery tag settled; RabbitMQ settles one
      queue's publishes in order, so it is the count settled, which is
      what `publish-confirm` bounds its window with.
    - with `each`: one entry per publish, registered under its sequence
      number (1, 2, ... after confirm.select, as the broker numbers them)
      before it is sent, and filled with True (ack) or False (nack) when
      an ack or nack covers it (the one tag, or every tag up to it with
      `multiple`): `publish-confirm-each` waits on the oldest entry.
    """

    def __init__(self, each):
        self.highest = 0
        self.nacked = 0
        self.each = each
        self.waiting = collections.OrderedDict()

    def register(self, sequence):
        entry = [None]
        self.waiting[sequence] = entry
        return entry

    def settle(self, tag, multiple, acked):
        if tag > self.highest:
            self.highest = tag
        if not acked:
            self.nacked += 1
        if not self.each:
            return
        if multiple:
            while self.waiting:
                first = next(iter(self.waiting))
                if first > tag:
                    break
                self.waiting.popitem(last=False)[1][0] = acked
        else:
            entry = self.waiting.pop(tag, None)
            if entry is not None:
                entry[0] = acked


def confirm_loop(scenario, count, publish, wait_until):
    """The two confirm scenarios over a library's `publish()` and
    `wait_until(condition)` (process input until condition() holds);
    returns the Confirms to hook into the library's ack and nack."""
    each = scenario == "publish-confirm-each"
    confirms = Confirms(each)

    def run():
        if each:
            outstanding = collections.deque()
            for sequence in range(1, count + 1):
                if len(outstanding) >= WINDOW:
                    oldest = outstanding.popleft()
                    wait_until(lambda: oldest[0] is not None)
                    if not oldest[0]:
                        raise RuntimeError("publish nacked")
                outstanding.append(confirms.register(sequence))
                publish()
            for entry in outstanding:
                wait_until(lambda: entry[0] is not None)
                if not entry[0]:
                    raise RuntimeError("publish nacked")
        else:
            for published in range(1, count + 1):
                if published - confirms.highest > WINDOW:
                    wait_until(lambda: published - confirms.highest <= WINDOW)
                publish()
            wait_until(lambda: confirms.highest >= count)
            if confirms.nacked:
                raise RuntimeError(f"{confirms.nacked} nacks")

    return confirms, run


# ---- pika (BlockingConnection) ----------------------------------------------


def run_pika(scenario, size, count, queue):
    import pika

    parameters = pika.ConnectionParameters(
        host=HOST,
        port=PORT,
        virtual_host="/",
        credentials=pika.PlainCredentials("guest", "guest"),
    )
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    payload = b"x" * size
    latencies = []
    if scenario == "publish":
        measure = Measure()
        for _ in range(count):
            channel.basic_publish(exchange="", routing_key=queue, body=payload)
        channel.queue_declare(queue=queue, passive=True)
    elif scenario in ("publish-confirm", "publish-confirm-each"):
        # pika's blocking API confirms one publish at a time only:
        # BlockingChannel.confirm_delivery() makes every basic_publish wait
        # for its own ack (a window of 1). For a window of 1,000 this uses
        # the pika Channel that the BlockingChannel wraps (`_impl`, whose
        # confirm_delivery takes an ack/nack callback, pika's asynchronous
        # API) and the BlockingChannel's own wait loop (`_flush_output`,
        # what its confirming basic_publish waits with), both private.
        # basic_publish stays the public, non-waiting one.
        def publish():
            channel.basic_publish(exchange="", routing_key=queue, body=payload)

        def wait_until(condition):
            channel._flush_output(condition)

        confirms, run = confirm_loop(scenario, count, publish, wait_until)

        def on_confirm(frame):
            method = frame.method
            confirms.settle(
                method.delivery_tag,
                method.multiple,
                isinstance(method, pika.spec.Basic.Ack),
            )

        selected = []
        channel._impl.confirm_delivery(
            ack_nack_callback=on_confirm,
            callback=lambda _frame: selected.append(True),
        )
        wait_until(lambda: bool(selected))
        measure = Measure()
        run()
    elif scenario == "consume":
        channel.basic_qos(prefetch_count=PREFETCH)
        measure = Measure()
        received = 0

        def on_message(channel, method, _properties, _body):
            nonlocal received
            # One dispatch may run past the count: leave the rest unacked
            # (given back at the close), as the other clients do.
            if received >= count:
                return
            received += 1
            if received % ACK_EVERY == 0 or received == count:
                channel.basic_ack(delivery_tag=method.delivery_tag, multiple=True)

        channel.basic_consume(queue=queue, on_message_callback=on_message)
        # Returns once deliveries are waiting, after running their callbacks.
        while received < count:
            connection.process_data_events(time_limit=None)
    elif scenario == "rpc":
        reply = []

        def on_reply(_channel, _method, properties, _body):
            reply.append(properties.correlation_id)

        channel.basic_consume(queue=REPLY_TO, on_message_callback=on_reply, auto_ack=True)
        measure = Measure()
        for call in range(count):
            correlation_id = str(call)
            properties = pika.BasicProperties(reply_to=REPLY_TO, correlation_id=correlation_id)
            sent = time.perf_counter()
            channel.basic_publish(exchange="", routing_key=queue, body=payload, properties=properties)
            while correlation_id not in reply:
                connection.process_data_events(time_limit=None)
            reply.clear()
            latencies.append((time.perf_counter() - sent) * 1e6)
    else:
        raise RuntimeError(f"unknown scenario {scenario}")
    result = measure.finish(count, latencies)
    connection.close()
    return result


# ---- py-amqp ------------------------------------------------------------------


def run_py_amqp(scenario, size, count, queue):
    import amqp

    connection = amqp.Connection(
        host=f"{HOST}:{PORT}", userid="guest", password="guest", virtual_host="/"
    )
    connection.connect()
    channel = connection.channel()
    # One message object, published again and again (its properties are
    # encoded at each publish), as the Rust children reuse their body.
    message = amqp.Message(b"x" * size)
    latencies = []

    def wait_until(condition):
        # Each drain_events reads and dispatches at least one frame.
        while not condition():
            connection.drain_events(timeout=TIMEOUT)

    if scenario == "publish":
        measure = Measure()
        for _ in range(count):
            channel.basic_publish(message, exchange="", routing_key=queue)
        channel.queue_declare(queue=queue, passive=True)
    elif scenario in ("publish-confirm", "publish-confirm-each"):
        # py-amqp's own confirming publish (basic_publish_confirm, or
        # confirm_publish=True on the connection) waits for an ack after
        # every publish (a window of 1). For a window of 1,000: confirm
        # mode by confirm_select, the plain basic_publish, and the
        # channel's basic_ack / basic_nack event callbacks (the hooks kombu
        # uses for returns), run by drain_events.
        def publish():
            channel.basic_publish(message, exchange="", routing_key=queue)

        confirms, run = confirm_loop(scenario, count, publish, wait_until)
        channel.confirm_select()
        channel.events["basic_ack"].add(
            lambda tag, multiple: confirms.settle(tag, multiple, True)
        )
        channel.events["basic_nack"].add(
            lambda tag, multiple: confirms.settle(tag, multiple, False)
        )
        measure = Measure()
        run()
    elif scenario == "consume":
        channel.basic_qos(0, PREFETCH, False)
        measure = Measure()
        received = 0

        def on_message(delivered):
            nonlocal received
            if received >= count:
                return
            received += 1
            if received % ACK_EVERY == 0 or received == count:
                channel.basic_ack(delivered.delivery_tag, multiple=True)

        channel.basic_consume(queue=queue, callback=on_message)
        wait_until(lambda: received >= count)
    elif scenario == "rpc":
        reply = []

        def on_reply(delivered):
            reply.append(delivered.properties.get("correlation_id"))

        channel.basic_consume(queue=REPLY_TO, no_ack=True, callback=on_reply)
        measure = Measure()
        for call in range(count):
            correlation_id = str(call)
            request = amqp.Message(
                b"x" * size, reply_to=REPLY_TO, correlation_id=correlation_id
            )
            sent = time.perf_counter()
            channel.basic_publish(request, exchange="", routing_key=queue)
            wait_until(lambda: correlation_id in reply)
            reply.clear()
            latencies.append((time.perf_counter() - sent) * 1e6)
    else:
        raise RuntimeError(f"unknown scenario {scenario}")
    result = measure.finish(count, latencies)
    connection.close()
    return result


CLIENTS = {"pika": run_pika, "py-amqp": run_py_amqp}


def main(arguments):
    if len(arguments) != 5 or arguments[0] not in CLIENTS:
        sys.exit(
            "usage: peers.py <pika|py-amqp> <scenario> <size> <count> <queue>"
        )
    client, scenario, size, count, queue = arguments
    result = CLIENTS[client](scenario, int(size), int(count), queue)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
