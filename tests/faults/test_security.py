"""Security: where the API listens, the API key, CORS, Redis with a password and with TLS,
jobs planted in Redis, and what the logs leave out. Real processes and echo workers where a
process is what is tested (its bind, its logs, its Redis connection); the API key and CORS
run against the API served on a thread of this process (tests/support/fleet.py)."""

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from api.server import check_exposure
from shared.keys import queue_name_for_model
from shared.settings import DEMO_MODEL_ID, Settings
from tests.support.fleet import in_process_fleet
from tests.support.processes import ROOT, Processes, free_port, wait_until
from tests.support.redis_server import RedisServer, RedisServerError, Tls

KEY = "test-key-0123456789"
SECRET = "zebra-quux-7781"
"""A question word that must never reach a log unless MLXQ_LOG_CONTENT is on."""


def echo_env(base: dict[str, str], **overrides: str) -> dict[str, str]:
    return {**base, "MLXQ_ENGINE": "echo", **overrides}


def ask(api: str, question: str = "hello there", **kwargs) -> httpx.Response:
    return httpx.post(f"{api}/ask", json={"question": question}, timeout=30, **kwargs)


# -- where the API listens -------------------------------------------------------------------


def test_the_default_bind_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLXQ_HOST", "MLXQ_API_KEY", "MLXQ_ALLOW_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert check_exposure(settings) is None
    for host in ("localhost", "127.0.0.1", "127.0.0.2", "::1"):
        assert check_exposure(Settings(host=host)) is None, host
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.test"):
        problem = check_exposure(Settings(host=host))
        assert problem is not None and host in problem and "MLXQ_API_KEY" in problem, host
        assert check_exposure(Settings(host=host, api_key=KEY)) is None
        assert check_exposure(Settings(host=host, allow_insecure=True)) is None


def test_api_refuses_to_listen_on_all_interfaces_without_a_key(redis_url: str) -> None:
    env = {"MLXQ_REDIS_URL": redis_url, "MLXQ_HOST": "0.0.0.0", "MLXQ_PORT": str(free_port())}
    env_without_key = {k: v for k, v in os.environ.items() if k != "MLXQ_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "mlxq_cli", "api"],
        cwd=ROOT,
        env={**env_without_key, "PYTHONPATH": str(ROOT), **env, "MLXQ_ALLOW_INSECURE": "false"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr
    assert "MLXQ_API_KEY" in result.stderr and "MLXQ_ALLOW_INSECURE" in result.stderr


@pytest.mark.parametrize(
    "extra", [{"MLXQ_ALLOW_INSECURE": "true"}, {"MLXQ_API_KEY": KEY}], ids=["insecure", "key"]
)
def test_api_listens_on_all_interfaces_when_allowed(
    processes: Processes, mlxq_env: dict[str, str], extra: dict[str, str]
) -> None:
    api = processes.api({**mlxq_env, "MLXQ_HOST": "0.0.0.0", **extra})
    assert httpx.get(f"{api}/health", timeout=5).status_code == 200


# -- the API key -----------------------------------------------------------------------------


KEYED_DB = 6
"""The Redis database of the API-key tests' service (other tests flush database 0)."""


@pytest.fixture(scope="module")
def keyed_redis(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_server.rsplit('/', 1)[0]}/{KEYED_DB}")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="module")
def keyed_api(redis_server: str, keyed_redis: redis.Redis) -> Iterator[str]:
    """An API with MLXQ_API_KEY and an echo worker, shared by the API-key tests: served on
    threads of this process (tests/support/fleet.py)."""
    redis_url = f"{redis_server.rsplit('/', 1)[0]}/{KEYED_DB}"
    with in_process_fleet(redis_url, api_key=KEY) as fleet:
        yield fleet.api


PROTECTED = [
    ("POST", "/ask", {"question": "hello there"}),
    ("GET", "/v1/models", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "hello there"}]},
    ),
    ("POST", "/v1/completions", {"model": DEMO_MODEL_ID, "prompt": "hello there"}),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
]


def test_health_needs_no_key(keyed_api: str) -> None:
    assert httpx.get(f"{keyed_api}/health", timeout=5).json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_every_other_route_needs_the_key(
    keyed_api: str, method: str, path: str, body: dict | None
) -> None:
    def call(headers: dict[str, str]) -> httpx.Response:
        return httpx.request(method, f"{keyed_api}{path}", json=body, headers=headers, timeout=30)

    wrong = [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": f"Bearer {KEY}x"},
        {"authorization": f"Bearer {KEY[:-1]}"},
        {"authorization": KEY},
        {"authorization": f"Basic {KEY}"},
        {"x-api-key": f"{KEY}x"},
    ]
    for headers in wrong:
        response = call(headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        body_401 = response.json()
        if path.startswith("/v1/"):
            assert body_401["error"]["code"] == "unauthorized"
            assert "API key" in body_401["error"]["message"]
        else:
            assert body_401["code"] == "unauthorized" and "API key" in body_401["detail"]
    for right in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):  # x-api-key:
        response = call(right)  # Anthropic's clients send the key that way
        assert response.status_code == 200, response.text


def test_refused_requests_enqueue_nothing(keyed_api: str, keyed_redis: redis.Redis) -> None:
    before = keyed_redis.keys("rq:job:*")
    assert ask(keyed_api, headers={"authorization": "Bearer wrong-key"}).status_code == 401
    assert keyed_redis.keys("rq:job:*") == before


def test_the_openai_client_works_with_the_key_and_fails_without(keyed_api: str) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    client = openai.OpenAI(base_url=f"{keyed_api}/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(model=DEMO_MODEL_ID, messages=messages)
    assert completion.choices[0].message.content == "hello there"
    assert [m.id for m in client.models.list()][0] == DEMO_MODEL_ID

    wrong = openai.OpenAI(base_url=f"{keyed_api}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(model=DEMO_MODEL_ID, messages=messages)
    assert raised.value.status_code == 401
    assert raised.value.code == "unauthorized"


# -- CORS ------------------------------------------------------------------------------------


def _preflight(api: str, origin: str) -> httpx.Response:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    return httpx.options(f"{api}/ask", headers=headers, timeout=5)


def test_cors_is_off_by_default(make_fleet) -> None:
    with make_fleet(workers=0) as fleet:
        check_cors_is_off(fleet.api)


def check_cors_is_off(api: str) -> None:
    # Without an API key, another site's page is refused outright (DNS-rebinding guard).
    response = httpx.get(f"{api}/health", headers={"origin": "http://example.test"}, timeout=5)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    preflight = _preflight(api, "http://example.test")
    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(make_fleet) -> None:
    with make_fleet(workers=0, cors_origins=["http://example.test"]) as fleet:
        check_cors_allows_only(fleet.api)


def check_cors_allows_only(api: str) -> None:
    allowed = httpx.get(f"{api}/health", headers={"origin": "http://example.test"}, timeout=5)
    assert allowed.headers["access-control-allow-origin"] == "http://example.test"
    preflight = _preflight(api, "http://example.test")
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://example.test"
    assert "POST" in preflight.headers["access-control-allow-methods"]

    for origin in ("http://other.test", "http://example.test.evil.test", "null"):
        other = httpx.get(f"{api}/health", headers={"origin": origin}, timeout=5)
        assert other.status_code == 403, origin  # no API key: other origins are refused
        assert "access-control-allow-origin" not in other.headers, origin
        refused = _preflight(api, origin)
        assert refused.status_code in (400, 403), origin
        assert "access-control-allow-origin" not in refused.headers, origin


# -- Redis with a password, and with TLS -----------------------------------------------------

PASSWORD = "s3cret-redis-pw"


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    with RedisServer(tmp_path / "redis", password=PASSWORD) as server:
        yield server.port


def test_redis_with_a_password(
    processes: Processes, redis_with_password: int, cache_dir: Path
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password}/0"
    env = {"MLXQ_REDIS_URL": url, "MLXQ_CACHE_DIR": str(cache_dir), "MLXQ_ENGINE": "echo"}
    processes.worker(env)
    api = processes.api(env)
    response = ask(api, "one two three")
    assert response.status_code == 200, response.text
    assert response.json() == {"answer": "one two three"}
    for name, text in _logs(processes).items():
        assert "127.0.0.1" in text or "worker" in text, name  # the logs are not empty
        assert PASSWORD not in text, f"{name} logs the Redis password:\n{text}"


def test_a_worker_with_a_wrong_redis_password_exits_saying_why(
    processes: Processes, redis_with_password: int, cache_dir: Path
) -> None:
    url = f"redis://:wrong-password@127.0.0.1:{redis_with_password}/0"
    env = {"MLXQ_REDIS_URL": url, "MLXQ_CACHE_DIR": str(cache_dir), "MLXQ_ENGINE": "echo"}
    worker = processes.start("worker", env)
    assert worker.wait(30) != 0
    log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "Cannot reach Redis" in log
    assert "password" in log.lower()
    assert "Traceback" not in log


def test_fleet_queries_while_redis_is_down_are_a_503(
    processes: Processes, tmp_path: Path, cache_dir: Path
) -> None:
    """Routes that read Redis directly (the model list, a model's check) say Redis is down,
    in their route's error shape, like /ask: it was a 500 and a traceback."""
    with RedisServer(tmp_path / "redis") as server:
        api = processes.api({"MLXQ_REDIS_URL": server.url, "MLXQ_CACHE_DIR": str(cache_dir)})
        server.stop()

    models = httpx.get(f"{api}/v1/models", timeout=10)
    assert models.status_code == 503, models.text
    assert models.json()["error"]["code"] == "redis_unavailable"
    chat = {"model": "another-model", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{api}/v1/chat/completions", json=chat, timeout=10)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "server_error"
    asked = ask(api)
    assert asked.status_code == 503 and asked.json()["code"] == "redis_unavailable"
    log = _logs(processes)
    assert all("Traceback" not in text for text in log.values()), log


def _openssl(tmp: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=60)


def _make_certificates(tmp: Path) -> None:
    """A throwaway CA, and a certificate it signs for 127.0.0.1 and localhost."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        tmp,
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=mlxq test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        tmp,
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (tmp / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        tmp,
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server that speaks only TLS and needs a password; yields its rediss:// URL."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    _make_certificates(tmp_path)
    tls = Tls(cert=tmp_path / "server.pem", key=tmp_path / "server.key", ca=tmp_path / "ca.pem")
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls=tls)
    try:
        server.start()
    except RedisServerError:
        log = server.log_text()
        if "Bad directive" in log or "not supported" in log.lower():
            pytest.skip(f"this redis-server was built without TLS: {log[-300:]}")
        pytest.fail(f"redis-server with TLS did not start:\n{log}")
    yield server.url
    server.stop()


def test_redis_over_tls_with_a_password(
    processes: Processes, tls_redis: str, cache_dir: Path, tmp_path: Path
) -> None:
    # Plain TCP to the TLS port is refused: the traffic really is encrypted.
    plain = tls_redis.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_connect_timeout=1, socket_timeout=1).ping()

    env = {"MLXQ_REDIS_URL": tls_redis, "MLXQ_CACHE_DIR": str(cache_dir), "MLXQ_ENGINE": "echo"}
    processes.worker(env)
    api = processes.api(env)
    response = ask(api, "over TLS")
    assert response.status_code == 200, response.text
    assert response.json() == {"answer": "over TLS"}
    streamed = httpx.post(
        f"{api}/ask", json={"question": "streamed over TLS", "stream": True}, timeout=30
    )
    assert streamed.status_code == 200 and "event: done" in streamed.text
    for name, text in _logs(processes).items():
        assert PASSWORD not in text, f"{name} logs the Redis password:\n{text}"


# -- jobs planted in Redis -------------------------------------------------------------------


def test_a_planted_job_naming_another_function_is_refused_and_never_run(
    make_fleet, redis_url: str, tmp_path: Path
) -> None:
    victim = tmp_path / "must-survive.txt"
    victim.write_text("still here")
    client = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name_for_model(DEMO_MODEL_ID), connection=client, serializer=JSONSerializer)
    planted = [
        queue.enqueue("os.remove", str(victim)),
        queue.enqueue("shutil.rmtree", str(tmp_path)),
        queue.enqueue("subprocess.run", ["rm", "-f", str(victim)]),
    ]
    with make_fleet() as fleet:  # an echo worker on a thread of this process
        for job in planted:
            wait_until(lambda job=job: job.get_status(refresh=True) == "failed", 10, "a refusal")
            assert "Refused" in job.latest_result().exc_string
        assert victim.read_text() == "still here"
        assert queue.finished_job_registry.count == 0
        # The worker goes on serving.
        assert ask(fleet.api).json() == {"answer": "hello there"}


def test_a_planted_pickled_job_is_never_unpickled(
    processes: Processes, mlxq_env: dict[str, str], tmp_path: Path
) -> None:
    """Jobs are JSON: a pickle that would run code when loaded is never loaded."""
    victim = tmp_path / "must-survive.txt"
    victim.write_text("still here")
    env = echo_env(mlxq_env)
    client = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    queue = Queue(queue_name_for_model(DEMO_MODEL_ID), connection=client, serializer=pickle)

    class Boom:
        def __reduce__(self):
            return (os.remove, (str(victim),))

    job = queue.enqueue("worker.jobs.generate", request=Boom())
    assert Job.exists(job.id, connection=client)
    worker = processes.worker(env)
    api = processes.api(env)

    wait_until(lambda: job.get_status(refresh=True) == "failed", 10, "the planted job to fail")
    assert queue.count == 0
    assert victim.read_text() == "still here"
    assert worker.poll() is None
    assert ask(api).json() == {"answer": "hello there"}


# -- logs ------------------------------------------------------------------------------------


def _exercise(api: str) -> None:
    question = f"tell me about {SECRET}"
    assert ask(api, question).json() == {"answer": question}
    stream = httpx.post(f"{api}/ask", json={"question": question, "stream": True}, timeout=30)
    assert SECRET in stream.text
    chat = {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": question}]}
    response = httpx.post(f"{api}/v1/chat/completions", json=chat, timeout=30)
    assert SECRET in response.text
    # and a refused one, whose body FastAPI echoes in its 422 (to the client, not the log)
    refused = httpx.post(f"{api}/ask", json={"question": question, "bad": 1}, timeout=30)
    assert refused.status_code == 422


def _logs(processes: Processes) -> dict[str, str]:
    processes.stop_all()
    return {
        Path(p.log_path).name: Path(p.log_path).read_text()  # type: ignore[attr-defined]
        for p in processes._started
    }


def test_logs_carry_no_content_by_default(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env = echo_env(mlxq_env)
    processes.worker(env)
    _exercise(processes.api(env))
    logs = _logs(processes)
    assert len(logs) == 2
    for name, text in logs.items():
        assert "POST /ask" in text or "worker" in text, name  # the logs are not empty
        assert SECRET not in text, f"{name} logs the question or the answer:\n{text}"


def test_log_content_puts_prompts_and_answers_in_the_worker_log(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = echo_env(mlxq_env, MLXQ_LOG_CONTENT="true")
    processes.worker(env)
    _exercise(processes.api(env))
    logs = _logs(processes)
    worker_log = next(text for name, text in logs.items() if name.startswith("worker"))
    assert worker_log.count(SECRET) >= 6  # three requests, each its prompt and its answer
