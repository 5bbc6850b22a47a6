"""A planted job is failed before RQ does anything else with it: its webhooks never fire and
its retry settings never loop."""

import http.server
import threading
import time

import redis
from rq import Retry
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from shared.keys import queue_name_for_model
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import free_port, wait_until


def test_a_planted_job_fires_no_webhook_and_is_not_retried(make_fleet, redis_url: str) -> None:
    calls: list[str] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            calls.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = redis.Redis.from_url(redis_url)
        queue = Queue(
            queue_name_for_model(DEMO_MODEL_ID), connection=client, serializer=JSONSerializer
        )
        job = queue.enqueue(
            "os.getcwd",
            retry=Retry(max=5),
            webhooks=[
                Webhook(f"http://127.0.0.1:{port}/failed", "failed"),
                Webhook(f"http://127.0.0.1:{port}/finished", "finished"),
            ],
        )
        with make_fleet():  # an echo worker on a thread of this process
            wait_until(lambda: job.get_status(refresh=True) == "failed", 10, "the refusal")
            assert "Refused" in job.latest_result().exc_string
            time.sleep(3)  # a retry or a webhook would have happened by now
            assert job.get_status(refresh=True) == "failed" and queue.count == 0
        assert calls == []
    finally:
        server.shutdown()
