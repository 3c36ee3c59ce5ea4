"""Runs kombu mailbox nodes for the interop tests, one thread each, until
stdin closes.

    python kombu_nodes.py NAMESPACE HOSTNAME... [--slow SECONDS]

Each node answers `ping` with {"ok": "pong"} and `slow` after sleeping
SECONDS (default 1.0). Prints "ready <hostname>" once consuming.
"""
import sys
import threading
import time
import traceback

from kombu import Connection
from kombu.pidbox import Mailbox

BROKER = "amqp://guest:guest@127.0.0.1:5672//"

# print() writes the text and the newline separately, so the nodes' threads
# could interleave their lines; one write per line under a lock keeps each
# whole.
OUTPUT = threading.Lock()


def say(line):
    with OUTPUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def serve(namespace, hostname, slow, stop):
    with Connection(BROKER) as connection:
        # celery's settings: fanout, queues expire, messages live 300 s.
        mailbox = Mailbox(namespace, type="fanout", queue_ttl=300.0,
                          queue_expires=10.0, reply_queue_ttl=300.0,
                          reply_queue_expires=10.0)(connection)
        node = mailbox.Node(hostname, channel=connection.channel())

        def ping(state, **kwargs):
            return {"ok": "pong"}

        def slow_ping(state, **kwargs):
            time.sleep(slow)
            return {"ok": "slow pong"}

        node.handlers["ping"] = ping
        node.handlers["slow"] = slow_ping
        consumer = node.listen()
        say(f"ready {hostname}")
        with consumer:
            while not stop.is_set():
                try:
                    connection.drain_events(timeout=0.2)
                except TimeoutError:
                    pass


def run(namespace, hostname, slow, stop):
    try:
        serve(namespace, hostname, slow, stop)
    except Exception as error:  # reported to the test rather than lost
        say(f"failed {hostname}: {error!r}")
        traceback.print_exc()


def main():
    arguments = sys.argv[1:]
    slow = 1.0
    if "--slow" in arguments:
        index = arguments.index("--slow")
        slow = float(arguments[index + 1])
        del arguments[index:index + 2]
    namespace, hostnames = arguments[0], arguments[1:]
    stop = threading.Event()
    threads = [threading.Thread(target=run, args=(namespace, name, slow, stop), daemon=True)
               for name in hostnames]
    for thread in threads:
        thread.start()
    sys.stdin.read()  # until the test closes our stdin (or dies)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)


if __name__ == "__main__":
    main()
