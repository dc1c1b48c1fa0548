# One image, two containers (see ecs/task-definition.json):
#   web: the default command, migrations then gunicorn serving the storefront and admin on :8000
#   bot: `python manage.py runbot`
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/app/data

WORKDIR /app
RUN useradd --create-home --uid 10001 app

# Dependencies first, so code changes don't reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir storefront vouchers discordbot && touch storefront/__init__.py vouchers/__init__.py discordbot/__init__.py \
    && pip install . && pip uninstall -y imagecredits

COPY . .
# Static files are collected at build time and served by whitenoise; the key is a build-only placeholder.
RUN SECRET_KEY=collectstatic-only DEBUG=false python manage.py collectstatic --noinput \
    && mkdir -p /app/data && chown app:app /app/data

USER app
# The SQLite file lives here: mount a host (EBS-backed) volume, shared by both containers. Never EFS/NFS.
VOLUME ["/app/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM

CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn storefront.wsgi --bind 0.0.0.0:8000 --workers ${WEB_CONCURRENCY:-3} --access-logfile - --forwarded-allow-ips='*'"]
