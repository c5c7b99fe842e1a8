"""Static checks of compose.yaml: no Docker engine needed."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"

API_COMMAND = ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
WORKER_COMMAND = ["arq", "jobs.worker.WorkerSettings"]


def _load_compose() -> dict:
    text = COMPOSE_FILE.read_text()
    try:
        import yaml
    except ImportError:  # check-jsonschema always brings ruamel.yaml
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(text)
    return yaml.safe_load(text)


def _services() -> dict:
    return _load_compose()["services"]


def _argv(command) -> list[str]:
    """A compose `command` as an argv list, whether written as a string or a list."""
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _one_shot_services(services: dict) -> set[str]:
    """Services others wait on to *finish*: they exit, so they need no healthcheck."""
    names = set()
    for service in services.values():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, dict):
            for name, spec in depends_on.items():
                if spec.get("condition") == "service_completed_successfully":
                    names.add(name)
    return names


def _check_jsonschema() -> str:
    beside_python = Path(sys.executable).parent / "check-jsonschema"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("check-jsonschema")
    if found is None:
        pytest.fail("check-jsonschema is not installed (it is in the dev extras)")
    return found


def test_compose_file_is_valid_against_compose_spec():
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_has_no_obsolete_version_key():
    assert "version" not in _load_compose()


def test_redis_in_compose_uses_aof_every_second():
    argv = _argv(_services()["redis"]["command"])
    assert argv[0] == "redis-server"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] == "everysec"


def test_redis_data_is_kept_in_a_named_volume():
    compose = _load_compose()
    assert "redis-data:/data" in compose["services"]["redis"]["volumes"]
    assert "redis-data" in compose["volumes"]


def test_api_service_runs_uvicorn_on_port_8000():
    assert _argv(_services()["api"]["command"]) == API_COMMAND


def test_worker_service_runs_the_arq_worker():
    assert _argv(_services()["worker"]["command"]) == WORKER_COMMAND


def test_every_long_running_service_has_a_healthcheck():
    services = _services()
    long_running = set(services) - _one_shot_services(services)
    assert {"redis", "minio", "api", "worker"} <= long_running
    missing = sorted(
        name
        for name in long_running
        if not services[name].get("healthcheck", {}).get("test")
        or services[name]["healthcheck"].get("disable")
    )
    assert missing == []


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_wait_for_healthy_redis_and_created_bucket(name):
    depends_on = _services()[name]["depends_on"]
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["minio-init"]["condition"] == "service_completed_successfully"


def test_worker_gets_time_to_finish_jobs_on_stop():
    assert _services()["worker"]["stop_grace_period"] == "30s"


def test_worker_healthcheck_probes_its_metrics_port():
    worker = _services()["worker"]
    assert str(worker["environment"]["WORKER_METRICS_PORT"]) == "9100"
    assert "http://127.0.0.1:9100/metrics" in " ".join(worker["healthcheck"]["test"])


def test_bucket_init_creates_the_bucket_idempotently():
    init = _services()["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["entrypoint"])
    assert "mc alias set" in script
    assert "mc mb --ignore-existing" in script


@pytest.mark.parametrize("variable", ["API_KEYS", "ADMIN_API_KEYS"])
def test_key_defaults_interpolate_to_valid_json(variable):
    # Compose closes ${VAR:-default} at the brace that balances every "{" before it
    # (compose-go getFirstBraceClosingIndex), so a JSON default must be balanced and
    # the whole value must be exactly one substitution.
    value = _services()["api"]["environment"][variable]
    match = re.fullmatch(r"\$\{" + variable + r":-(.*)\}", value)
    assert match, value
    default = match.group(1)
    json.loads(default)
    assert default.count("{") == default.count("}")


def test_api_and_worker_share_one_environment():
    services = _services()
    assert services["api"]["environment"] == services["worker"]["environment"]
    env = services["api"]["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:+replacement}`, nested (what this
    file uses), against `env`."""
    out, i = "", 0
    while (start := value.find("${", i)) != -1:
        depth, end = 0, start
        for end in range(start + 1, len(value)):
            depth += value[end] == "{"
            depth -= value[end] == "}"
            if depth == 0:
                break
        inner = value[start + 2 : end]
        name, op, rest = re.match(r"([A-Za-z_]\w*)(:-|:\+)?(.*)", inner, re.S).groups()
        given = env.get(name, "")
        if op == ":-":
            given = given or _interpolate(rest, env)
        elif op == ":+":
            given = _interpolate(rest, env) if given else ""
        out += value[i:start] + given
        i = end + 1
    return out + value[i:]


def _collector_config() -> dict:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load((ROOT / "deploy/otel/collector.yaml").read_text())


def test_the_collector_runs_only_with_the_otel_profile():
    services = _services()
    assert services["otel-collector"]["profiles"] == ["otel"]
    assert [name for name, s in services.items() if "otel" in s.get("profiles", [])] == [
        "otel-collector"
    ]
    mounted = services["otel-collector"]["volumes"]
    assert "./deploy/otel/collector.yaml:/etc/otelcol/config.yaml:ro" in mounted


def test_the_collector_takes_otlp_over_http_and_prints_every_span():
    config = _collector_config()
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and traces["exporters"] == ["debug"]
    assert config["exporters"]["debug"]["verbosity"] == "detailed"


@pytest.mark.parametrize(
    ("shell", "endpoint"),
    [
        ({}, ""),
        ({"COMPOSE_PROFILES": "otel"}, "http://otel-collector:4318"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318"}, "http://elsewhere:4318"),
        (
            {"COMPOSE_PROFILES": "otel", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://mine:4318"},
            "http://mine:4318",
        ),
    ],
)
def test_api_and_worker_export_spans_only_with_the_otel_profile_or_an_endpoint(shell, endpoint):
    # An empty endpoint leaves tracing off (jobs.tracing treats it as unset).
    value = _services()["worker"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert _interpolate(value, shell) == endpoint


HA_SERVICES = ["redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"]


def test_the_ha_profile_runs_a_replica_and_three_sentinels_and_nothing_else():
    services = _services()
    profiled = sorted(name for name, s in services.items() if "ha" in s.get("profiles", []))
    assert profiled == HA_SERVICES
    for name in ("redis", "api", "worker", "minio"):
        assert not services[name].get("profiles"), name


def test_the_replica_follows_redis_with_aof_and_its_own_volume():
    replica = _services()["redis-replica"]
    argv = _argv(replica["command"])
    assert argv[argv.index("--replicaof") + 1 : argv.index("--replicaof") + 3] == ["redis", "6379"]
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert "redis-replica-data:/data" in replica["volumes"]
    assert "redis-replica-data" in _load_compose()["volumes"]
    # Both announce their service name, so Sentinels hand out names that survive restarts.
    assert "redis-replica" in argv[argv.index("--replica-announce-ip") + 1]
    primary = _argv(_services()["redis"]["command"])
    assert primary[primary.index("--replica-announce-ip") + 1] == "redis"


@pytest.mark.parametrize("name", HA_SERVICES[1:])
def test_each_sentinel_watches_redis_by_name_with_a_quorum_of_two(name):
    sentinel = _services()[name]
    script = sentinel["entrypoint"][-1]
    assert "sentinel monitor mymaster redis 6379 2" in script
    assert "sentinel resolve-hostnames yes" in script
    assert "port 26379" in script
    assert script.rstrip().endswith("exec redis-server /tmp/sentinel.conf --sentinel")
    assert "26379" in sentinel["healthcheck"]["test"]


def test_api_and_worker_find_redis_through_the_sentinels_only_when_told():
    from jobs.settings import load_settings

    env = _services()["api"]["environment"]
    assert _interpolate(env["REDIS_SENTINELS"], {}) == ""
    assert _interpolate(env["REDIS_SENTINEL_MASTER"], {}) == "mymaster"
    assert _interpolate(env["REDIS_MIN_REPLICAS"], {}) == "0"
    # The value the header of compose.yaml gives for the `ha` profile.
    documented = re.search(r"REDIS_SENTINELS=(\S+)", COMPOSE_FILE.read_text()).group(1)
    given = _interpolate(env["REDIS_SENTINELS"], {"REDIS_SENTINELS": documented})
    parsed = load_settings(environment="development", redis_sentinels=given).redis_sentinels
    assert parsed == [(name, 26379) for name in HA_SERVICES[1:]]
