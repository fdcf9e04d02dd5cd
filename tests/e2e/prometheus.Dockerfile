# For the e2e tests only: the host's Prometheus (Debian's package) on the debootstrapped base, standing in
# for prom/prometheus, which cannot be pulled here. Same entrypoint, user and paths as the official image,
# so compose.yaml runs either unchanged.
ARG BASE_IMAGE=localhost/debian-py:12
FROM ${BASE_IMAGE}
COPY prometheus promtool /bin/
RUN mkdir -p /etc/prometheus /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
