"""`python -m discordbot.health`: the bot container's health check. Exit 0 when healthy, 1 otherwise.

The running bot touches BOT_HEALTH_FILE at least every 20 seconds while it is healthy: its event loop runs, and
it either holds the bot lease with the gateway connected or stands by for the lease (see `discordbot.bot`). This
check passes when the file was touched within BOT_HEALTH_MAX_AGE seconds (default 90). It reads only the
environment (no Django), so it is fast enough to run every few seconds.
"""

import os
import sys
import tempfile
import time

DEFAULT_HEALTH_FILE = os.path.join(tempfile.gettempdir(), "imagecredits-bot.health")
DEFAULT_MAX_AGE = 90.0


def check(path: str, max_age: float, now: float | None = None) -> tuple[bool, str]:
    try:
        touched = os.stat(path).st_mtime
    except OSError:
        return False, f"unhealthy: the bot has not written its health file {path}"
    age = (time.time() if now is None else now) - touched
    if age > max_age:
        return False, f"unhealthy: the bot's health file is {age:.0f} s old (more than {max_age:g} s)"
    return True, f"healthy: the bot's health file is {max(age, 0):.0f} s old"


def main() -> int:
    path = os.environ.get("BOT_HEALTH_FILE") or DEFAULT_HEALTH_FILE
    try:
        max_age = float(os.environ.get("BOT_HEALTH_MAX_AGE") or DEFAULT_MAX_AGE)
    except ValueError:
        print("unhealthy: BOT_HEALTH_MAX_AGE is not a number")
        return 1
    ok, line = check(path, max_age)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
