# stallscope, built in one stage and run from a slim one as a non-root user.
#
#   docker build -t stallscope:local .
#   docker run --rm -p 3000:3000 -p 9464:9464 stallscope:local
#
# Plain Dockerfile syntax (no BuildKit-only features), so docker-compose 1.29's classic
# builder and Compose v2 both build it. .dockerignore sends only what the build needs.

ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# diesel's sync PostgreSQL and MySQL connections link libpq and libmariadb (SQLite is
# compiled in). The rust:*-bookworm images usually carry the -dev packages already; saying
# so here keeps the build working if the base image gets slimmer.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev default-libmysqlclient-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .cargo/config.toml sets --cfg tokio_unstable, which the runtime metrics need: keep it.
COPY . .
RUN cargo build --release --locked --bin stallscope \
 && install -D -m 0755 target/release/stallscope /out/stallscope \
 && rm -rf target

FROM debian:${DEBIAN_RELEASE}-slim
# The client libraries the binary links (scripts/checks/stack.sh compares this list with the
# binary's ELF NEEDED entries): libpq for PostgreSQL, libmariadb for MySQL. No TLS stack of
# its own beyond what they pull in.
# A fixed non-root uid, so volume permissions are predictable, and a working directory it
# owns: the default DATABASE_URL, sqlite://stallscope.db, is a file relative to it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 libmariadb3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin stallscope \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/stallscope
WORKDIR /var/lib/stallscope
COPY --from=build /out/stallscope /usr/local/bin/stallscope

# Listen on all interfaces inside the container; /metrics also on its own thread (9464),
# and tokio-console (when enabled with STALLSCOPE_CONSOLE=1) on 6669.
ENV STALLSCOPE_BIND=0.0.0.0:3000 \
    STALLSCOPE_METRICS_BIND=0.0.0.0:9464 \
    TOKIO_CONSOLE_BIND=0.0.0.0:6669 \
    RUST_LOG=info
EXPOSE 3000 9464 6669

USER 10001:10001

# GET /healthz with bash alone (no curl in the image): healthy on a 200 from the service
# port. During a stall the service cannot answer, and the container turns unhealthy after
# three misses: that is the point. scripts/checks/stack.sh runs this exact command.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${STALLSCOPE_BIND##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 status <&3 && [[ $status == *' 200 '* ]]"]

ENTRYPOINT ["stallscope"]
CMD ["serve"]
