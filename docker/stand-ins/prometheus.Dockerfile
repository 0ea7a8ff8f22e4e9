# Stand-in for prom/prometheus:v3.5.0 where no image registry is reachable: Debian bookworm's Prometheus (2.42),
# with the official image's entry point and default flags, and wget for the compose healthcheck
# (docker/local-base-images.sh --stack builds it).
FROM python:3.11.14-slim-bookworm
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir -p /prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
