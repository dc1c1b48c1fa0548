"""Build the local stand-in for the Dockerfile's official Python base image, for the offline image test.

No container registry is reachable here, so the test cannot pull `python:3.11-slim-bookworm`. Instead it
debootstraps a minimal Debian bookworm with Python 3.11 (the same Debian release and Python minor version as the
official image), makes `/usr/local` a virtual environment so `python` and `pip` sit where the official image has
them, and `docker import`s the folder. The result is cached as a Docker image: a machine builds it once (about
1-2 minutes), later runs reuse it. Production builds never see it: the Dockerfile's default base stays the
official image pinned by digest; the test passes this one through the PYTHON_BASE build argument.

Run directly (`python tests/deploy/base_image.py`) to build it ahead of the test.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_IMAGE = "imagecredits-test-base:bookworm-python3.11"
MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def ensure_base_image(name: str = BASE_IMAGE) -> str:
    """Return the local base image's name, building it first if this machine has none yet."""
    if image_exists(name):
        return name
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap (.ci/run does it)")
    with tempfile.TemporaryDirectory(prefix="imagecredits-rootfs-") as scratch:
        root = Path(scratch) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                str(root),
                MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["chroot", str(root), "python3", "-m", "venv", "/usr/local"], check=True)
        # This machine reaches the package registries through its own trust store (which may hold a proxy's CA);
        # the stand-in base trusts what the host trusts, so `pip install` inside the build works as it does here.
        host_bundle = Path(HOST_CA_BUNDLE)
        if host_bundle.exists():
            shutil.copyfile(host_bundle, root / "etc/ssl/certs/ca-certificates.crt")
        # As in the official image: no apt lists or caches in the layer.
        for leftovers in (root / "var/lib/apt/lists", root / "var/cache/apt/archives"):
            shutil.rmtree(leftovers, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                f"ENV PIP_CERT={HOST_CA_BUNDLE}",
                "--change",
                'CMD ["python3"]',
                "-",
                name,
            ],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrapped root failed")
    return name


if __name__ == "__main__":
    print(ensure_base_image(*sys.argv[1:]))
