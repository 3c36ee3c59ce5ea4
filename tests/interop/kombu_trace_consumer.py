"""Consumes one message with kombu and prints the trace context its
headers carry as JSON, for the interop test of trace propagation: what an
application consuming with kombu (and OpenTelemetry's kombu or Celery
instrumentation, which read these headers) would see.

    python kombu_trace_consumer.py QUEUE
"""
import json
import sys

from kombu import Connection, Queue

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def main():
    queue_name = sys.argv[1]
    with Connection(BROKER) as connection:
        queue = Queue(queue_name, no_declare=True)(connection.default_channel)
        message = queue.get(no_ack=True)
        if message is None:
            print(json.dumps({"error": "the queue was empty"}), flush=True)
            sys.exit(1)
        headers = message.headers or {}
        print(json.dumps({
            "traceparent": headers.get("traceparent"),
            "tracestate": headers.get("tracestate"),
            "body": message.body.decode("utf-8"),
        }), flush=True)


if __name__ == "__main__":
    main()
