"""The celery app of the task interop tests: the four tasks the Rust
examples serve too, with the `rpc://` result backend, over the local
RabbitMQ (`CELERY_BROKER_URL` overrides it).

    tasks.add(x, y)           x + y
    tasks.echo(*args, **kw)   {"args": [...], "kwargs": {...}}
    tasks.fail(msg)           raises ValueError(msg)
    tasks.sleep(seconds)      sleeps, returns seconds

`CELERY_TASK_PROTOCOL=1` makes the app send task protocol 1.
"""
import os
import time

from celery import Celery

app = Celery(
    "interop_tasks",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.worker_hijack_root_logger = False
app.conf.task_protocol = int(os.environ.get("CELERY_TASK_PROTOCOL", "2"))
# One message at a time in flight per worker process, as the Rust worker
# is configured in the tests, so that timings compare.
app.conf.worker_prefetch_multiplier = int(os.environ.get("CELERY_PREFETCH_MULTIPLIER", "4"))


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="tasks.fail")
def fail(msg):
    raise ValueError(msg)


@app.task(name="tasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds
