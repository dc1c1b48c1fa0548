# One image, five jobs (see ecs/stack.yaml and docs/deploy.md), picked by ecs/entrypoint.py's first argument:
#   web (the default): gunicorn serving the storefront, admin and Stripe webhook on :8000
#   bot: manage.py runbot          migrate: manage.py migrate, once per deploy before the new code serves
#   replicate: Litestream's continuous backup of the SQLite file      manage ARGS: a scheduled management command
#
# The base is the official Python image pinned by digest, so a rebuild gets the same OS and Python. To move to a
# newer base: `docker buildx imagetools inspect python:3.11-slim-bookworm` and put its index digest here.
# Offline builds (the image test) pass a local stand-in instead: --build-arg PYTHON_BASE=... (tests/deploy/).
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
FROM ${PYTHON_BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DATA_DIR=/app/data \
    STATIC_ROOT=/app/staticfiles \
    HOME=/tmp

# tini runs as PID 1: it passes SIGTERM on to the process group (-g), so a stop during `migrate` or a restore ends
# them at once instead of being ignored until SIGKILL, and it reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

WORKDIR /app
# Dependencies first (from the hashed lock file, nothing unpinned), so code changes don't reinstall them.
COPY requirements.lock ./
RUN pip install --no-deps --require-hashes -r requirements.lock

COPY . .
# Static files are collected at build time and served by whitenoise; the key is a build-only placeholder.
# Bytecode is compiled now because the root filesystem is read-only at run time.
RUN SECRET_KEY=collectstatic-only DEBUG=false python manage.py collectstatic --noinput -v0 \
    && python -m compileall -q storefront vouchers discordbot ecs gunicorn.conf.py \
    && mkdir -p /app/data \
    && chown 10001:10001 /app/data

# Numeric, so the orchestrator can verify it is not root without reading /etc/passwd.
USER 10001:10001
# The SQLite file lives here: a host folder on the instance's dedicated EBS volume (ecs/stack.yaml), shared by
# every container on that host, owned by uid 10001. Never EFS/NFS.
VOLUME ["/app/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM

ENTRYPOINT ["tini", "-g", "--", "python", "/app/ecs/entrypoint.py"]
CMD ["web"]
