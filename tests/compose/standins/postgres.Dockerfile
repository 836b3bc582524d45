# Stand-in for postgres:16 from Debian's Postgres 15, for machines that cannot pull images.
# It keeps the official image's contract that docker-compose.yaml relies on: POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB; data in /var/lib/postgresql/data; scripts in
# /docker-entrypoint-initdb.d run once on a new data folder; pg_isready on PATH.
ARG BASE_IMAGE=meshbench-debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15 \
 && mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
