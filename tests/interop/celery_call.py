"""Python's side of the task interop tests and of the benchmark: sends
tasks with celery's `send_task` (as `apply_async` does) and waits for
their results with `AsyncResult.get()`, printing JSON.

    python celery_call.py QUEUE calls JSON
        JSON is a list of {"task", "args", "kwargs", "options"} (and
        "protocol": 1 for a task message of protocol 1, as Celery 3 sent
        them); all are sent, then each result is waited for. Prints a list of
        {"id", "state", "result"}, a failure's result as
        {"exc_type", "exc_message", "exc_module"} of the exception
        Python rebuilt.
    python celery_call.py QUEUE bench N (sequential|pipelined)
        N `tasks.add` calls, each waited for before the next, or all sent
        then all waited for. Prints {"tasks", "seconds", "per_second",
        "latency_ms": {"p50", "p90", "p99", "mean"}} (latency for
        sequential runs only).
"""
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from celery.result import AsyncResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from celery_tasks import app  # noqa: E402


def outcome(result, timeout):
    value = result.get(timeout=timeout, propagate=False)
    if isinstance(value, BaseException):
        value = {
            "exc_type": type(value).__name__,
            "exc_message": list(value.args),
            "exc_module": type(value).__module__,
        }
    return {"id": result.id, "state": result.state, "result": value}


def calls(queue, spec):
    sent = []
    for call in json.loads(spec):
        options = dict(call.get("options", {}))
        options["queue"] = queue
        args, kwargs = call.get("args", []), call.get("kwargs", {})
        if call.get("protocol") == 1:
            # The app's protocol is fixed once it sent a task: build the
            # message directly.
            task_id = str(uuid.uuid4())
            message = app.amqp.as_task_v1(task_id, call["task"], args, kwargs,
                                          reply_to=app.thread_oid)
            with app.producer_or_acquire() as producer:
                app.backend.on_task_call(producer, task_id)
                app.amqp.send_task_message(producer, call["task"], message, queue=queue)
            sent.append((AsyncResult(task_id, app=app), call))
            continue
        sent.append((app.send_task(call["task"], args=args, kwargs=kwargs, **options), call))
    out = []
    for result, call in sent:
        if call.get("options", {}).get("ignore_result"):
            out.append({"id": result.id, "state": "IGNORED", "result": None})
            continue
        out.append(outcome(result, call.get("timeout", 30)))
    print(json.dumps(out), flush=True)


def bench(queue, count, mode):
    latencies = []
    started = time.perf_counter()
    if mode == "sequential":
        for n in range(count):
            sent = time.perf_counter()
            value = app.send_task("tasks.add", args=[n, 1], queue=queue).get(timeout=30)
            latencies.append(time.perf_counter() - sent)
            assert value == n + 1, value
    else:
        results = [app.send_task("tasks.add", args=[n, 1], queue=queue) for n in range(count)]
        for n, result in enumerate(results):
            assert result.get(timeout=60) == n + 1
    seconds = time.perf_counter() - started
    report = {"tasks": count, "seconds": seconds, "per_second": count / seconds}
    if latencies:
        ordered = sorted(latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
        report["latency_ms"] = {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
                                "mean": statistics.mean(latencies) * 1000}
    print(json.dumps(report), flush=True)


def main():
    queue, mode = sys.argv[1], sys.argv[2]
    if mode == "calls":
        calls(queue, sys.argv[3])
    elif mode == "bench":
        bench(queue, int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
