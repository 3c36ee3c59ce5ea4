"""Broadcasts a mailbox command from Python and prints the replies as JSON,
for the interop tests.

    python kombu_broadcast.py NAMESPACE COMMAND DESTINATION [TIMEOUT]
"""
import json
import sys

from kombu import Connection
from kombu.pidbox import Mailbox

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def main():
    namespace, command, destination = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    with Connection(BROKER) as connection:
        mailbox = Mailbox(namespace, type="fanout", queue_ttl=300.0,
                          queue_expires=10.0, reply_queue_ttl=300.0,
                          reply_queue_expires=10.0)(connection)
        replies = mailbox._broadcast(command, {}, destination=[destination],
                                     reply=True, timeout=timeout)
        print(json.dumps({"replies": replies, "clock": mailbox.clock.value}), flush=True)


if __name__ == "__main__":
    main()
