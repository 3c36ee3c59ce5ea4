"""Fills a queue for a profile of consumption: `fill_queue.py QUEUE COUNT SIZE`.

Declares QUEUE (not durable), purges it and publishes COUNT messages of
SIZE bytes through py-amqp (in the interop venv, `scripts/interop-venv`),
so a consumer can then be profiled on its own, e.g.

    valgrind --tool=callgrind compare/target/release/amqp-compare \\
        child amqp-io-tokio consume SIZE COUNT QUEUE
"""

import sys

import amqp


def main() -> None:
    queue, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    connection = amqp.Connection("127.0.0.1:5672")
    connection.connect()
    channel = connection.channel()
    channel.queue_declare(queue, durable=False, auto_delete=False)
    channel.queue_purge(queue)
    body = b"x" * size
    for _ in range(count):
        channel.basic_publish(amqp.Message(body), routing_key=queue)
    # A synchronous call after the publishes: they have all reached the broker.
    channel.queue_declare(queue, passive=True)
    connection.close()


if __name__ == "__main__":
    main()
