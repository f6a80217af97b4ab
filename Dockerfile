# syntax=docker/dockerfile:1
# fwbench, CPU image. Build:  docker build -t fwbench .
# The CUDA variant is Dockerfile.cuda. Both run the same scripts/setup.sh as CI.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip g++ binutils ca-certificates libhdf5-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV FWBENCH_CACHE=/opt/fwbench
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Provisions the pinned runtimes into /opt/fwbench (the binary's rpath) and builds bin/fwbench.
RUN scripts/setup.sh \
 && rm -rf /opt/fwbench/wheels /opt/fwbench/rt-*/libtorch/include /opt/fwbench/rt-*/libtensorflow/include

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 ca-certificates libhdf5-103-1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 fwbench \
 && mkdir -p /data /out && chown fwbench /data /out
COPY --from=build /opt/fwbench /opt/fwbench
COPY --from=build /src/bin/fwbench /usr/local/bin/fwbench
ENV FWBENCH_CACHE=/home/fwbench/.cache/fwbench
USER 10001
WORKDIR /out
VOLUME ["/data", "/out"]
ENTRYPOINT ["fwbench"]
CMD ["compare", "--out", "/out"]
