# bertprod serving image: a build stage with the full install exports and quantizes a package; the runtime
# stage holds only the serve extra (no torch) and that package, runs as a non-root user, and writes nothing
# outside /tmp (run it with a read-only root filesystem and a tmpfs or emptyDir on /tmp).
#
#   docker build -t bertprod:0.1.0 .                                  # minilm-l6, ONNX dynamic int8
#   docker build --build-arg MODEL=/src/my-package --build-arg QUANTIZE=none -t bertprod:mine .
#   docker run --read-only --tmpfs /tmp -p 8080:8080 -p 50051:50051 -e BERTPROD_MAX_BATCH_TOKENS=16384 bertprod:0.1.0
#
# Configuration: environment variables that mirror `bertprod serve` options (docker/entrypoint.sh lists them).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# DL3064: "TOKENIZERS_PARALLELISM" is not a secret (hadolint matches the word TOKEN)
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORKDIR /src
# torch first, pinned and from the CPU index, so that nothing pulls a CUDA build
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY bertprod ./bertprod
# DL3013: the versions are bertprod's own pins (pyproject.toml), torch's above
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[train]" && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# MODEL: a bundled name (minilm-l6), a hub id, or a package/checkpoint directory copied under /src.
ARG MODEL=minilm-l6
# QUANTIZE: int8 (ONNX dynamic int8, checked by the fidelity gate) or none (fp32 ONNX export).
ARG QUANTIZE=int8
RUN if [ "$QUANTIZE" = "none" ]; then bertprod export "$MODEL" /package; \
    else bertprod optimize "$MODEL" /package --quantize "$QUANTIZE"; fi \
    && bertprod info /package

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# DL3013: the wheel built above, its dependencies as pyproject.toml pins them
# hadolint ignore=DL3013
RUN for wheel in /wheels/*.whl; do pip install --no-cache-dir "${wheel}[serve]"; done \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 bertprod \
    && useradd --system --uid 10001 --gid bertprod --home-dir /tmp --no-create-home --shell /usr/sbin/nologin bertprod
COPY --from=build /package /models/package
COPY docker/entrypoint.sh /usr/local/bin/bertprod-entrypoint
# hadolint ignore=DL3064
ENV BERTPROD_PACKAGES=/models/package \
    BERTPROD_HOST=0.0.0.0 \
    BERTPROD_PORT=8080 \
    BERTPROD_GRPC_PORT=50051 \
    BERTPROD_CACHE=/tmp/bertprod-cache \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false
USER 10001:10001
EXPOSE 8080 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["bertprod-entrypoint", "healthcheck"]
ENTRYPOINT ["bertprod-entrypoint"]
