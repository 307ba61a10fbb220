# EtsyPro Pricing: one image for every process (API, projector, relay, stream workers, CLI).
# Build: docker build -t etsypro .    Run it all: docker compose up (compose.yaml, docs/operations.md).
# Installs the project as pyproject.toml declares it (`pip install .`, what ./dev does minus the
# editable mode and the test extras), into a virtual environment copied into a slim runtime stage.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/etsypro
WORKDIR /src
COPY pyproject.toml README.md ./
# The packages of [tool.setuptools] packages, with their package data (migrations' SQL, the
# dashboard's static files, the common-password list, the fake Etsy's JSON).
COPY domain/ domain/
COPY codec/ codec/
COPY commands/ commands/
COPY read/ read/
COPY projections/ projections/
COPY api/ api/
COPY streams/ streams/
COPY migrations/ migrations/
COPY bench/ bench/
COPY fake_etsy/ fake_etsy/
RUN /opt/etsypro/bin/pip install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/etsypro/bin:$PATH \
    ETSYPRO_DATA_DIR=/var/lib/etsypro ETSYPRO_LOG_FORMAT=json
# A system user with no shell and no password; it owns only its data directory (the Kafka
# workers' local state, checkpoints). Nothing here needs root at run time.
RUN groupadd --system --gid 10001 etsypro \
    && useradd --system --uid 10001 --gid etsypro --no-create-home --shell /usr/sbin/nologin etsypro \
    && install -d -o etsypro -g etsypro -m 0750 /var/lib/etsypro
COPY --from=build /opt/etsypro /opt/etsypro
USER etsypro:etsypro
WORKDIR /var/lib/etsypro
EXPOSE 8000
# Ready = database reachable, schema current, every follower within ETSYPRO_READY_LAG_SECONDS
# (api/routers/health.py); a 503 makes urlopen raise, so the check fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
ENTRYPOINT ["etsypro"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
