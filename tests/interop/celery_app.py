"""A minimal celery app for the interop tests: a worker of it answers
`inspect ping` and `control` commands over the local RabbitMQ."""
import os

from celery import Celery

app = Celery(
    "interop",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
)
app.conf.worker_hijack_root_logger = False
