"""Schemathesis against the schema the API serves (GET /openapi.json of the API served on a
thread of this process, with an echo worker on another): for every operation, schema-valid
and schema-invalid requests, and no answer may be a 5xx or differ from the schema (an
undocumented status code, content type or body, or an invalid request that is accepted).

Generation is seeded per operation, so a run is reproducible; about 2,200 requests in all.
"""

import zlib
from collections.abc import Iterator

import pytest
import redis
import requests
import schemathesis

# Imported here, at collection, not lazily inside the test: pytest rewrites schemathesis's
# modules (it is a pytest plugin), and parsing one of them deep in a test's call stack has hit
# CPython 3.11's "AST constructor recursion depth mismatch" bug (fixed in 3.11.8).
import schemathesis.specs.openapi.schemas  # noqa: F401
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from shared.settings import DEMO_MODEL_ID
from tests.support.fleet import in_process_fleet

EXAMPLES = 60
"""Generated requests per operation and mode (positive, negative); operations without
parameters have fewer distinct requests, and Hypothesis stops when it has tried them all.
Generating them is where the time goes (about 12 ms a request, answering it under 2 ms):
at 200 a run sent 7,211 requests in 90-110 s on two cores; at 60, about 2,200."""
MIN_REQUESTS = 1000
SHORT_TIMEOUT_S = 2.0
"""A request that sets its own ``timeout`` below this may rightly end in a 504."""
DB = 5
"""The Redis database of this module (other tests flush database 0)."""
UPSTREAM_OPERATIONS = {"POST /api/pull"}
"""Their 502 is another server's failure, told as such (a pull from a Hugging Face hub that
this machine cannot reach); the schema check below still runs on it."""

CONFIG = {
    "checks": {
        # Checked below, allowing the 504 of a request whose own deadline is tiny.
        "not_a_server_error": {"enabled": False},
        # Schema-valid requests can still be refused with a 400 for what a JSON schema does
        # not say: max_tokens above MLXQ_MAX_TOKENS_CAP, more than 4 stop sequences, n, logprobs,
        # tools, echo or suffix, a prompt list of several strings. Those refusals are covered by
        # test_bad_input.py; every other check runs, negative_data_rejection included.
        "positive_data_acceptance": {"enabled": False},
        # An invalid request may also be refused for its size before it is read (a 413 past
        # MLXQ_MAX_BODY_BYTES): schemathesis's default list leaves that status out.
        "negative_data_rejection": {
            "expected-statuses": [
                "400",
                "401",
                "403",
                "404",
                "405",
                "406",
                "409",
                "413",
                "415",
                "422",
                "428",
                "429",
                "5xx",
            ]
        },
    }
}


@pytest.fixture(scope="module")
def api(redis_server: str) -> Iterator[str]:
    """The API served by uvicorn on a thread of this process, with an echo worker on another
    (tests/support/fleet.py). As fast as two processes were: the time goes to generating
    the requests (Hypothesis), not to answering them."""
    redis_url = f"{redis_server.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(redis_url).flushdb()
    settings = {"queue_timeout": 2, "max_queued": 100000, "log_level": "WARNING"}
    with in_process_fleet(redis_url, **settings) as fleet:
        yield fleet.api
    redis.Redis.from_url(redis_url).flushdb()


def _served_model(case: schemathesis.Case) -> schemathesis.Case:
    """Most random model names are refused with a 404: ask the served model instead."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = DEMO_MODEL_ID
    return case


def _short_deadline(case: schemathesis.Case) -> bool:
    timeout = case.body.get("timeout") if isinstance(case.body, dict) else None
    return isinstance(timeout, int | float) and timeout < SHORT_TIMEOUT_S


class Run:
    """Counts and failures across every operation and mode."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.session = requests.Session()
        self.sent: dict[str, int] = {}
        self.statuses: dict[tuple[str, int], int] = {}
        self.failures: dict[str, str] = {}

    def fuzz(self, operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE and operation.method.upper() == "POST":
            strategy = st.one_of(strategy, strategy.map(_served_model))
        name = f"{operation.label} {mode.value}"

        @seed(zlib.crc32(name.encode()))
        @settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: schemathesis.Case) -> None:
            self.sent[name] = self.sent.get(name, 0) + 1
            response = case.call(base_url=self.api, session=self.session, timeout=30)
            key = (operation.label, response.status_code)
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if response.status_code >= 500 and not (
                (response.status_code == 504 and _short_deadline(case))
                or (response.status_code == 502 and operation.label in UPSTREAM_OPERATIONS)
            ):
                problem = f"server error {response.status_code}: {response.text[:500]}"
            else:
                try:
                    case.validate_response(response)
                    return
                except BaseException as exc:  # schemathesis's FailureGroup
                    problem = str(exc)
            first_line = problem.strip().splitlines()[0]
            self.failures.setdefault(f"{name}: {first_line}", f"{case.body!r:.500}\n{problem}")

        try:
            send()
        except Unsatisfiable:
            # An operation without parameters has no invalid request to generate.
            assert mode is GenerationMode.NEGATIVE and not operation.body, name


def test_generated_requests_get_documented_answers_and_no_server_errors(api: str) -> None:
    config = schemathesis.Config.from_dict(CONFIG)
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /ask",
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "GET /v1/models",
        "GET /health",
    }
    run = Run(api)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run.fuzz(operation, mode)

    total = sum(run.sent.values())
    print(f"\nschemathesis: {total} generated requests")
    for name, count in run.sent.items():
        print(f"  {name}: {count}")
    print("  answers:", dict(sorted(run.statuses.items())))
    failures = list(run.failures.items())
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures[:10])
    assert total >= MIN_REQUESTS
