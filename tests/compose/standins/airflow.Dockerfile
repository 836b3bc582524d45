# Stand-in for apache/airflow:3.3.2-python3.11, built from Debian's packages and the
# project's lock, for machines that cannot pull images. It keeps the parts of the official
# image that docker-compose.yaml and docker/Dockerfile rely on: user `airflow` (uid 50000,
# group 0), AIRFLOW_HOME=/opt/airflow, `pip` for that user, dumb-init as PID 1 and an
# /entrypoint that runs `airflow <command>` (or bash/python), curl and celery on PATH.
ARG BASE_IMAGE=meshbench-debian:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-venv curl ca-certificates dumb-init procps \
 && rm -rf /var/lib/apt/lists/*

# This machine's CA bundle: PyPI answers only through it (docker/Dockerfile's pip too).
COPY ca-bundle.crt /usr/local/share/meshbench-build-ca.crt
ENV SSL_CERT_FILE=/usr/local/share/meshbench-build-ca.crt \
    PIP_CERT=/usr/local/share/meshbench-build-ca.crt \
    REQUESTS_CA_BUNDLE=/usr/local/share/meshbench-build-ca.crt \
    AIRFLOW_HOME=/opt/airflow \
    PATH=/opt/airflow-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow \
 && mkdir -p /opt/airflow /opt/airflow-venv \
 && chown -R airflow:0 /opt/airflow /opt/airflow-venv \
 && chmod -R g+rwX /opt/airflow /opt/airflow-venv

USER airflow
COPY --chown=airflow:0 requirements.lock /tmp/requirements.lock
RUN python3 -m venv /opt/airflow-venv \
 && pip install --quiet --no-cache-dir uv \
 && uv pip install --quiet --no-cache --python /opt/airflow-venv/bin/python -r /tmp/requirements.lock

COPY --chown=airflow:0 airflow-entrypoint.sh /entrypoint
WORKDIR /opt/airflow
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD ["--help"]
