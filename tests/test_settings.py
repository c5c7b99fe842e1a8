"""Settings are validated at start: a bad value stops the process and names the variable."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.settings import DEV_SECRETS_KEY, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
SECRETS_KEY = base64.b64encode(b"s" * 32).decode()


def test_defaults_follow_the_contract(monkeypatch):
    for name in ("JOB_MAX_TRIES", "WORKER_LEASE_SECONDS", "MAX_DOCUMENT_BYTES"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None, secrets_key=SECRETS_KEY)
    assert settings.environment == "production"
    assert settings.job_max_tries == 5
    assert settings.worker_lease_seconds == 10
    assert settings.max_document_bytes == 1024 * 1024
    assert settings.webhook_retry_schedule == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    assert settings.webhook_disable_after_seconds == 432000
    assert settings.webhook_allow_private_networks is False
    assert settings.job_retention_seconds == 7 * 24 * 3600


def test_api_keys_accept_digests_and_plain_keys(monkeypatch):
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    monkeypatch.setenv("API_KEYS", f'{{"acme": ["sha256:{digest}"], "globex": ["plain:g"]}}')
    monkeypatch.setenv("ADMIN_API_KEYS", '["plain:op"]')
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "0, 1,2")
    monkeypatch.setenv("ENVIRONMENT", "development")  # plain: keys
    settings = load_settings()
    assert (digest, "acme") in settings.account_key_digests
    assert len(settings.admin_key_digests) == 1
    assert settings.webhook_retry_schedule == [0, 1, 2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOB_MAX_TRIES", "many"),
        ("JOB_MAX_TRIES", "0"),
        ("API_KEYS", '{"acme": ["hunter2"]}'),
        ("API_KEYS", "not json"),
        ("ADMIN_API_KEYS", '{"a": 1}'),
        ("REDIS_URL", "http://localhost"),
        ("WEBHOOK_RETRY_SCHEDULE", "0,soon"),
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "perhaps"),
        ("S3_ENDPOINT_URL", "minio:9000"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert name in str(caught.value)


def test_plain_keys_are_refused_in_production(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", '{"acme": ["plain:dev"]}')
    with pytest.raises(SettingsError, match="API_KEYS"):
        load_settings()


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "arq"), "jobs.worker.WorkerSettings"],
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", "0"],
    ],
    ids=["worker", "api"],
)
def test_process_with_a_bad_value_exits_with_a_message_not_a_traceback(command):
    env = {"PATH": "/usr/bin:/bin", "JOB_TIMEOUT_SECONDS": "-3", "HOME": "/tmp"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "JOB_TIMEOUT_SECONDS" in done.stderr
    assert "Traceback" not in done.stderr


# Fail closed


def test_without_secrets_key_only_development_starts(monkeypatch):
    for name in ("ENVIRONMENT", "SECRETS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError, match="SECRETS_KEY is not set"):
        load_settings(_env_file=None)
    monkeypatch.setenv("SECRETS_KEY", "")  # compose's ${SECRETS_KEY:-}: not set
    with pytest.raises(SettingsError, match="SECRETS_KEY is not set"):
        load_settings(_env_file=None)
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert load_settings(_env_file=None).master_keys == [base64.b64decode(DEV_SECRETS_KEY)]


def test_the_built_in_secrets_key_is_refused_unless_development(monkeypatch):
    monkeypatch.setenv("SECRETS_KEY", DEV_SECRETS_KEY)
    with pytest.raises(SettingsError, match="SECRETS_KEY is the built-in development key"):
        load_settings(_env_file=None)
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="SECRETS_KEY"):
        load_settings(_env_file=None)
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert load_settings(_env_file=None).environment == "development"


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "arq"), "jobs.worker.WorkerSettings"],
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", "0"],
    ],
    ids=["worker", "api"],
)
@pytest.mark.parametrize("secrets_key", [None, DEV_SECRETS_KEY], ids=["unset", "built-in"])
def test_process_without_its_own_secrets_key_refuses_to_start(command, secrets_key):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    if secrets_key:
        env["SECRETS_KEY"] = secrets_key
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SECRETS_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_secrets_key_previous_lists_former_keys_and_each_is_checked(monkeypatch):
    monkeypatch.setenv("SECRETS_KEY", SECRETS_KEY)
    older = [base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2)]
    monkeypatch.setenv("SECRETS_KEY_PREVIOUS", f"{older[0]}, {older[1]}")
    settings = load_settings(_env_file=None)
    assert settings.master_keys == [base64.b64decode(k) for k in (SECRETS_KEY, *older)]
    monkeypatch.setenv("SECRETS_KEY_PREVIOUS", f"{older[0]},not-a-key")
    with pytest.raises(SettingsError, match="SECRETS_KEY_PREVIOUS must be 32 random bytes"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("account", "says"),
    [
        ("_operator", "reserved"),  # the canary account: no tenant may be it
        ("_acme", "reserved"),
        ("acme\n", "letters, digits"),  # `$` would let the newline through
        ("", "letters, digits"),
    ],
)
def test_tenant_account_ids_are_refused_when_reserved_or_malformed(monkeypatch, account, says):
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("API_KEYS", json.dumps({account: ["plain:k"]}))
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert "API_KEYS" in str(caught.value) and says in str(caught.value)
