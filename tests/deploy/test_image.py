"""The image, built with `make image` and run the way ecs/stack.yaml's task definitions run it.

Each container gets what its task definition gives it: read-only root filesystem, the tmpfs mounts, the numeric
user, the memory limits, the command, the environment (fake values for its secrets), the data folder mounted at the
same path; no `--init` (the image's own tini is PID 1). The health checks are the task definitions' own commands,
run inside the container as ECS runs them; stops are `docker stop` with the task's stopTimeout, which sends SIGTERM
and then SIGKILL, as ECS does.

No registry is reachable here, so the base image is a local stand-in built once per machine with debootstrap
(tests/deploy/base_image.py) and passed in through the PYTHON_BASE build argument; the production Dockerfile keeps
its official, digest-pinned base. Docker runs without a bridge network here (see NOTES.md), so containers share the
host's network and the web binds a free port (GUNICORN_BIND) instead of 8000.

Runs under CI=true (where it must run: .ci/run installs and starts Docker); skips elsewhere when Docker is missing.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.deploy.base_image import ensure_base_image
from tests.deploy.cfn import Stack

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "imagecredits:test"
STACK = Stack(DatabaseEngine="sqlite")
FAKE_SECRETS = {
    "SECRET_KEY": "image-test-" + "k" * 60,
    "STRIPE_SECRET_KEY": "sk_test_fake_for_the_image_test",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_fake_for_the_image_test",
    "DISCORD_TOKEN": "fake-bot-token",
    "OPENAI_API_KEY": "sk-test-fake-for-the-image-test",
    "EMAIL_URL": "consolemail://",
}
IN_CI = os.environ.get("CI") == "true"


def _docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="the image is the same on both databases; it is tested once, in the SQLite pass",
    ),
]


@pytest.fixture(scope="module")
def image():
    if not IN_CI:
        pytest.skip(
            "the image test runs under CI=true (it builds an image: about 3 minutes, 4-5 on a machine without the base)"
        )
    if not _docker_ready():
        pytest.fail("CI=true but no Docker engine answers: .ci/run installs docker.io and starts dockerd")
    base = ensure_base_image()
    subprocess.run(
        ["make", "--no-print-directory", "image", f"PYTHON_BASE={base}", f"IMAGE={IMAGE}"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=900,
    )
    return IMAGE


def container_definition(name: str) -> dict:
    for task in STACK.of_type("AWS::ECS::TaskDefinition").values():
        for container in task["ContainerDefinitions"]:
            if container["Name"] == name:
                return container
    raise KeyError(name)


class Container:
    """One `docker run -d` of the image, configured from a container definition of the stack."""

    def __init__(
        self,
        image: str,
        name: str,
        data: Path,
        *,
        env: dict | None = None,
        mounts: tuple = (),
        command: list[str] | None = None,
    ) -> None:
        self.definition = container_definition(name)
        self.name = f"ic-test-{name}-{uuid.uuid4().hex[:8]}"
        d = self.definition
        args = ["docker", "run", "-d", "--name", self.name, "--network", "host"]
        if d["ReadonlyRootFilesystem"]:
            args.append("--read-only")
        for tmpfs in d["LinuxParameters"]["Tmpfs"]:
            args += ["--tmpfs", f"{tmpfs['ContainerPath']}:{','.join(tmpfs['MountOptions'])},size={tmpfs['Size']}m"]
        args += [
            "--user",
            d["User"],
            "--memory",
            f"{d['Memory']}m",
            "--memory-reservation",
            f"{d['MemoryReservation']}m",
        ]
        for mount in d.get("MountPoints", []):
            args += ["-v", f"{data}:{mount['ContainerPath']}"]
        for source, target, *mode in mounts:
            args += ["-v", f"{source}:{target}:{mode[0] if mode else 'ro'}"]
        environment = {e["Name"]: e["Value"] for e in d.get("Environment", [])}
        environment.pop("LITESTREAM_REPLICA_URL", None)  # S3 is out of reach; the restore drill uses a file replica
        environment.update({s["Name"]: FAKE_SECRETS[s["Name"]] for s in d.get("Secrets", [])})
        environment.update(env or {})
        for key, value in environment.items():
            args += ["-e", f"{key}={value}"]
        self.started = subprocess.run(
            [*args, image, *(command or d["Command"])], capture_output=True, text=True, timeout=60
        )
        assert self.started.returncode == 0, self.started.stderr

    def state(self) -> dict:
        out = subprocess.run(["docker", "inspect", self.name], capture_output=True, text=True, timeout=30).stdout
        return json.loads(out)[0]["State"]

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    def wait(self, timeout: float = 120) -> int:
        return int(
            subprocess.run(["docker", "wait", self.name], capture_output=True, text=True, timeout=timeout).stdout
        )

    def exec(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout)

    def health_check(self, replace: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
        """The task definition's health check command, run inside the container as ECS runs it."""
        command = self.definition["HealthCheck"]["Command"]
        assert command[0] == "CMD"
        argv = [arg.replace(*replace) if replace else arg for arg in command[1:]]
        return self.exec(argv, timeout=self.definition["HealthCheck"]["Timeout"] + 10)

    def stop(self) -> tuple[float, int]:
        """`docker stop` with the task's stopTimeout: SIGTERM, then SIGKILL when it runs out. Seconds and exit code."""
        started = time.monotonic()
        subprocess.run(
            ["docker", "stop", "-t", str(self.definition["StopTimeout"]), self.name], check=True, timeout=200
        )
        return time.monotonic() - started, self.state()["ExitCode"]

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)


@pytest.fixture
def data_folder():
    """A host folder for the SQLite file, owned by the image's user as ecs/stack.yaml's user data makes it."""
    folder = Path(tempfile.mkdtemp(prefix="ic-image-data-"))
    uid, gid = container_definition("web")["User"].split(":")
    os.chown(folder, int(uid), int(gid))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def run(image):
    started: list[Container] = []

    def start(name: str, data: Path, **kwargs) -> Container:
        started.append(Container(image, name, data, **kwargs))
        return started[-1]

    yield start
    for container in started:
        container.remove()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def migrate(run, data: Path) -> None:
    migration = run("migrate", data, env={"ALLOW_EMPTY_DATABASE": "true"})
    assert migration.wait() == 0, migration.logs()


def test_web_serves_passes_its_health_check_and_stops_cleanly_on_sigterm(run, data_folder):
    migrate(run, data_folder)
    port = _free_port()
    host = {e["Name"]: e["Value"] for e in container_definition("web")["Environment"]}["ALLOWED_HOSTS"]
    web = run("web", data_folder, env={"GUNICORN_BIND": f"127.0.0.1:{port}", "FORWARDED_ALLOW_IPS": "127.0.0.1"})
    _until(lambda: web.health_check(replace=(":8000", f":{port}")).returncode == 0, 90, "the web health check")

    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host, "X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(request, timeout=10) as page:
        assert page.status == 200 and "Buy image credits" in page.read().decode()
        request_id = page.headers["X-Request-ID"]
    # JSON logs, one object a line, the request's line carrying its id.
    lines = [json.loads(line) for line in web.logs().splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == request_id and line.get("status") == 200 for line in lines), lines
    # Nothing on the read-only root is writable, even by accident; /tmp is.
    assert web.exec(["touch", "/app/x"]).returncode != 0
    assert web.exec(["touch", "/tmp/x"]).returncode == 0
    assert web.exec(["id", "-u"]).stdout.strip() == "10001"

    seconds, code = web.stop()
    assert code == 0, web.logs()
    assert seconds < container_definition("web")["StopTimeout"]  # ended by SIGTERM, not by the SIGKILL after


def test_bot_connects_to_discord_answers_and_stops_cleanly_on_sigterm(run, data_folder):
    from tests.discordbot.harness import BotHarness

    migrate(run, data_folder)
    harness = BotHarness()  # the fake Discord and fake OpenAI on 127.0.0.1; the bot inside the container
    harness.start_servers()
    try:
        hooks = Path(__file__).with_name("container_hooks")
        bot = run(
            "bot",
            data_folder,
            env={
                # Test side only, as in tests/discordbot/launch_bot.py: discord.py's base URLs point at the fake.
                "FAKE_DISCORD_API": harness.discord.api_base,
                "FAKE_DISCORD_GATEWAY": str(harness.discord.gateway_url),
                "OPENAI_BASE_URL": harness.openai.base_url,
                "PYTHONPATH": "/app:/opt/test-hooks",
            },
            mounts=(
                (hooks, "/opt/test-hooks"),
                (ROOT / "tests" / "discordbot" / "launch_bot.py", "/opt/test-launch/launch_bot.py"),
            ),
        )
        _until(lambda: harness.discord.identifies or bot.state()["Status"] != "running", 90, "the bot to connect")
        assert bot.state()["Status"] == "running", bot.logs()

        # It works from inside the container, on the database in the mounted folder.
        sent = harness.command("balance", user=410_000_000_000_000_123)
        answer = harness.answer(sent, timeout=30)
        assert answer.ephemeral and "You have **0 credits**" in answer.content, answer.content

        _until(lambda: bot.health_check().returncode == 0, 120, "the bot health check")

        seconds, code = bot.stop()
        assert code == 0, bot.logs()
        assert seconds < container_definition("bot")["StopTimeout"]
        assert "Bot stopped" in bot.logs()
        for secret in (FAKE_SECRETS["DISCORD_TOKEN"], FAKE_SECRETS["OPENAI_API_KEY"], FAKE_SECRETS["SECRET_KEY"]):
            assert secret not in bot.logs()
    finally:
        harness.close()


def test_a_root_owned_data_folder_fails_with_a_clear_message(run):
    root_owned = Path(tempfile.mkdtemp(prefix="ic-image-rootdata-"))  # root:root 0700, as a fresh host folder
    try:
        migration = run("migrate", root_owned, env={"ALLOW_EMPTY_DATABASE": "true"})
        assert migration.wait() == 78
        message = migration.logs()
        assert "is not writable by this container's user uid 10001" in message
        assert "chown -R 10001:10001 HOST_FOLDER" in message
        assert not list(root_owned.iterdir())
    finally:
        shutil.rmtree(root_owned, ignore_errors=True)


def test_an_empty_volume_with_an_unreadable_replica_refuses_to_start(run, data_folder):
    replica = Path(tempfile.mkdtemp(prefix="ic-image-replica-"))  # root-only: the container's user cannot read it
    try:
        web = run(
            "web",
            data_folder,
            env={"LITESTREAM_REPLICA_URL": "file:///replica"},
            mounts=((replica, "/replica"),),
        )
        assert web.wait() == 78
        assert "refusing to start on an empty database" in web.logs() and "could not be read" in web.logs()
        assert not (data_folder / "db.sqlite3").exists()
    finally:
        shutil.rmtree(replica, ignore_errors=True)


def test_sigterm_during_migrate_stops_it_at_once(run, data_folder):
    """The old image ran `sh -c` as PID 1, which ignored SIGTERM during migrate until SIGKILL (exit 137)."""
    migration = run("migrate", data_folder, env={"ALLOW_EMPTY_DATABASE": "true"})
    _until(lambda: "Applying" in migration.logs(), 60, "migrate to start applying migrations")
    still_running = migration.state()["Running"]
    seconds, code = migration.stop()
    assert code != 137, migration.logs()  # 137 = SIGKILLed at the end of the stop timeout
    assert seconds < 15
    if still_running:  # SIGTERM reached `manage.py migrate` itself (tini passes it to the process group)
        assert code == 143, migration.logs()


def test_image_runs_tini_as_pid_1_and_no_process_as_root(run, data_folder):
    migrate(run, data_folder)
    port = _free_port()
    web = run("web", data_folder, env={"GUNICORN_BIND": f"127.0.0.1:{port}"})
    _until(lambda: web.health_check(replace=(":8000", f":{port}")).returncode == 0, 90, "the web health check")
    assert re.match(r"tini", web.exec(["cat", "/proc/1/cmdline"]).stdout)
    top = subprocess.run(["docker", "top", web.name], capture_output=True, text=True, timeout=30)
    header, *processes = top.stdout.splitlines()
    assert header.split()[0] == "UID" and len(processes) >= 3, top.stdout  # tini, the gunicorn master, workers
    # The host has no user 10001, so ps shows the number.
    assert {line.split()[0] for line in processes} == {"10001"}, top.stdout


def _owned_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    uid, gid = container_definition("web")["User"].split(":")
    os.chown(folder, int(uid), int(gid))
    return folder


CODE = r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b"
LIST_VOUCHER_CODES = (
    "from vouchers.models import Voucher; print(*sorted(Voucher.objects.values_list('code', flat=True)))"
)


def test_the_replicator_backs_up_and_an_empty_volume_is_restored_before_the_web_opens_it(run, data_folder):
    replica, fresh = _owned_folder("ic-image-replica-"), _owned_folder("ic-image-fresh-")
    to_replica = {"LITESTREAM_REPLICA_URL": "file:///replica"}
    mounts = ((replica, "/replica", "rw"),)
    try:
        migration = run("migrate", data_folder, env={**to_replica, "ALLOW_EMPTY_DATABASE": "true"}, mounts=mounts)
        assert migration.wait() == 0, migration.logs()
        replicator = run("replicator", data_folder, env=to_replica, mounts=mounts)
        issued = run("job", data_folder, command=["manage", "issuevoucher", "9", "--count", "2"])
        assert issued.wait() == 0, issued.logs()
        codes = sorted(
            line for line in issued.logs().splitlines() if re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", line)
        )
        assert len(codes) == 2, issued.logs()

        # The web on an empty volume (a replaced host): it restores from the replica, then serves that data.
        web_logs: list[str] = []

        def restored() -> bool:
            for leftover in fresh.iterdir():
                leftover.unlink()
            port = _free_port()
            web = run("web", fresh, env={**to_replica, "GUNICORN_BIND": f"127.0.0.1:{port}"}, mounts=mounts)
            _until(
                lambda: (
                    web.state()["Status"] == "exited" or web.health_check(replace=(":8000", f":{port}")).returncode == 0
                ),
                90,
                "the restored web",
            )
            listed = web.exec(
                [
                    "python",
                    "/app/manage.py",
                    "shell",
                    "-c",
                    LIST_VOUCHER_CODES,
                ]
            )
            web_logs.append(web.logs())
            web.remove()
            return sorted(re.findall(CODE, listed.stdout)) == codes

        # Replication is continuous (every second); a restore made before it shipped the vouchers lacks them.
        _until(restored, 120, "a restore that holds the vouchers")
        assert "restoring the latest backup from the Litestream replica" in web_logs[-1]
        seconds, code = replicator.stop()
        assert code == 0, replicator.logs()
        assert seconds < container_definition("replicator")["StopTimeout"]
    finally:
        shutil.rmtree(replica, ignore_errors=True)
        shutil.rmtree(fresh, ignore_errors=True)
