"""rq-dashboard config module for mlxq (``rq-dashboard -j -c mlxq_rq_dashboard``, see README).

rq-dashboard 0.9.0 lists workers with ``Worker.all()`` without its serializer, so any busy
worker whose job is JSON-serialized (every mlxq job) fails its Workers panel with a 500.
This passes the dashboard's own serializer (JSONSerializer under ``-j``) along.
"""

import rq_dashboard.web as web
from rq import Worker


class _Worker(Worker):
    @classmethod
    def all(cls, *args, **kwargs):
        kwargs.setdefault("serializer", web.config.serializer)
        return super().all(*args, **kwargs)


web.Worker = _Worker
