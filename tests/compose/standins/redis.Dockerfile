# Stand-in for redis:7.2-bookworm from Debian's redis-server, for machines that cannot pull
# images: listens on every address without protected mode and keeps nothing on disk, as the
# official image does by default; redis-cli on PATH for the health check.
ARG BASE_IMAGE=meshbench-debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
USER redis
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
