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
WORKDIR /src
# .cargo/config.toml sets --cfg tokio_unstable, which the runtime metrics need: keep it.
COPY . .
RUN cargo build --release --locked --bin stallscope \
 && install -D -m 0755 target/release/stallscope /out/stallscope \
 && rm -rf target

FROM debian:${DEBIAN_RELEASE}-slim
# No TLS and no C libraries beyond glibc: the runtime image adds nothing to Debian slim.
# A fixed non-root uid, so volume permissions are predictable.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin stallscope
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
