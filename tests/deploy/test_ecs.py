"""The deploy files: the ECS task definition and the Dockerfile agree with the code and keep secrets secret."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASK = json.loads((ROOT / "ecs" / "task-definition.json").read_text())
CONTAINERS = {c["name"]: c for c in TASK["containerDefinitions"]}
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
DOCUMENTED = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, flags=re.M))
SECRET_NAMES = {"SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "DISCORD_TOKEN", "OPENAI_API_KEY"}


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def test_one_image_runs_as_web_and_bot():
    assert set(CONTAINERS) == {"web", "bot"}
    assert CONTAINERS["web"]["image"] == CONTAINERS["bot"]["image"]
    assert CONTAINERS["bot"]["command"] == ["python", "manage.py", "runbot"]
    assert "command" not in CONTAINERS["web"]  # the image's CMD: migrate, then gunicorn
    assert re.search(r"gunicorn storefront\.wsgi", DOCKERFILE)
    assert re.search(r"manage\.py migrate", DOCKERFILE)


def test_both_containers_share_the_sqlite_volume_on_the_host_not_on_nfs():
    (volume,) = TASK["volumes"]
    assert "efsVolumeConfiguration" not in volume  # WAL needs one host's filesystem
    assert TASK["requiresCompatibilities"] == ["EC2"]
    data_dir = re.search(r"DATA_DIR=(\S+)", DOCKERFILE).group(1)
    for container in CONTAINERS.values():
        assert {"sourceVolume": volume["name"], "containerPath": data_dir} in container["mountPoints"]
    assert f'VOLUME ["{data_dir}"]' in DOCKERFILE


def test_bot_starts_after_web_is_healthy_so_migrations_have_run():
    assert {"containerName": "web", "condition": "HEALTHY"} in CONTAINERS["bot"]["dependsOn"]
    assert "/healthz" in " ".join(CONTAINERS["web"]["healthCheck"]["command"])


def test_secrets_come_from_the_secret_store_never_plain_environment():
    for container in CONTAINERS.values():
        plain = _env(container)
        assert not SECRET_NAMES & set(plain), f"{container['name']} has a secret in plain environment"
        for secret in container.get("secrets", []):
            assert secret["valueFrom"].startswith("arn:aws:secretsmanager:")
    assert {"DISCORD_TOKEN", "SECRET_KEY"} <= {s["name"] for s in CONTAINERS["bot"]["secrets"]}
    assert {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "SECRET_KEY"} <= {
        s["name"] for s in CONTAINERS["web"]["secrets"]
    }


def test_every_variable_the_task_sets_is_documented_in_env_example():
    for container in CONTAINERS.values():
        names = set(_env(container)) | {s["name"] for s in container.get("secrets", [])}
        assert names <= DOCUMENTED, names - DOCUMENTED


def test_production_web_configuration_passes_check_deploy(tmp_path):
    result = _check_deploy(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_refuses_test_mode_payments_and_placeholder_images(tmp_path):
    result = _check_deploy(tmp_path, {"PAYMENTS_BACKEND": "test", "IMAGE_BACKEND": "placeholder"})
    assert result.returncode != 0
    assert "storefront.E001" in result.stderr and "storefront.E003" in result.stderr


def test_check_deploy_refuses_stripe_without_keys(tmp_path):
    result = _check_deploy(tmp_path, {"STRIPE_WEBHOOK_SECRET": ""})
    assert result.returncode != 0
    assert "storefront.E002" in result.stderr


def test_gunicorn_with_the_production_environment_passes_the_health_check_and_serves_the_shop(tmp_path):
    """The web container's own health check, run against gunicorn configured exactly as in the task.

    It calls by IP over plain HTTP, which ALLOWED_HOSTS and the HTTPS redirect must not refuse."""
    env = {**_web_environment(tmp_path), "STATIC_ROOT": str(tmp_path / "static")}
    for step in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v0"]):  # as the image does
        subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, check=True, timeout=120)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "storefront.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        command = CONTAINERS["web"]["healthCheck"]["command"]
        assert command[0] == "CMD"
        argv = [sys.executable if arg == "python" else arg.replace(":8000", f":{port}") for arg in command[1:]]
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert result.returncode == 0, result.stderr
        # Everything else still insists on a known host.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert refused.value.code == 400
        # The shop renders as the load balancer forwards it (HTTPS terminated there), and its stylesheet is
        # served from the collected, hashed static files: a template naming a missing file would fail here.
        host = env["ALLOWED_HOSTS"].split(",")[0]
        forwarded = {"Host": host, "X-Forwarded-Proto": "https"}
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers=forwarded)) as page:
            html = page.read().decode()
        assert page.status == 200 and "Buy image credits" in html
        stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', html)
        assert stylesheets and all(re.search(r"\.[0-9a-f]{12}\.css$", href) for href in stylesheets)
        for href in stylesheets:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{href}", headers=forwarded)
            with urllib.request.urlopen(request) as css:
                assert css.status == 200 and css.read()
    finally:
        server.terminate()
        server.wait(timeout=15)


def _web_environment(tmp_path: Path) -> dict[str, str]:
    """The web container's environment, with fake values for its secrets and a scratch data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STRIPE_", "OPENAI_", "DISCORD_"))}
    env.pop("DATABASE_URL", None)
    env.update(_env(CONTAINERS["web"]))
    env.update(
        {
            "SECRET_KEY": "x" * 64 + "-fake-production-key-for-the-check-only",
            "STRIPE_SECRET_KEY": "sk_test_fake_for_check",
            "STRIPE_WEBHOOK_SECRET": "whsec_test_fake_for_check",
            "OPENAI_API_KEY": "sk-test-fake-for-check",
            "EMAIL_URL": "consolemail://",
            "DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
        }
    )
    return env


def _check_deploy(tmp_path: Path, overrides: dict[str, str]) -> subprocess.CompletedProcess:
    """`manage.py check --deploy` with the web container's environment and fake values for its secrets."""
    env = {**_web_environment(tmp_path), **overrides}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", sorted(SECRET_NAMES))
def test_env_example_ships_no_secret_values(name):
    match = re.search(rf"^{name}=(.*)$", ENV_EXAMPLE, flags=re.M)
    assert match and match.group(1).strip() == "", f"{name} must be empty in .env.example"
