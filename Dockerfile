# syntax=docker/dockerfile:1
# softmax-serve: the HTTP model service in a small, non-root image.
#
#   docker build -t softmax-serve:0.1.0 .
#   docker run --rm -p 127.0.0.1:8000:8000 -v softmax-artifacts:/data/artifacts softmax-serve:0.1.0
#
# The store volume starts empty, so /health/ready answers 503 until a model is trained
# into it (see docker-compose.yml, profile "train"). tests/integration/test_image.py
# builds this file with podman and runs the image for real (make image-test);
# tests/integration/test_container.py checks its final stage without an engine.

# Both stages use the same base so that the venv's interpreter symlinks stay valid.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: build the project's wheel and install it with its runtime deps into a venv
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# No pip or setuptools inside the venv: the base image's pip installs into it (--python).
RUN python -m venv --without-pip /opt/venv

# Only what the wheel is built from; .dockerignore keeps the rest out of the context.
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service

# A wheel, not an editable install: the final stage gets site-packages and no source tree.
# The test suites some wheels ship (numpy's: 17 MB) are never run in the image.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m pip --python /opt/venv/bin/python install /wheels/*.whl \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} +

# ---- runtime: the venv and an unprivileged user, nothing else
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="softmax-serve" \
      org.opencontainers.image.description="Softmax-regression model serving with online learning" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    OPENBLAS_NUM_THREADS=1 \
    SOFTMAX_HOST=0.0.0.0 \
    SOFTMAX_PORT=8000 \
    SOFTMAX_STORE=/data/artifacts

# A fixed numeric uid/gid so that volume ownership is predictable across hosts.
RUN groupadd --system --gid 10001 softmax \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin softmax \
    && mkdir -p /data/artifacts \
    && chown 10001:10001 /data/artifacts

COPY --from=builder /opt/venv /opt/venv

WORKDIR /data
USER 10001:10001
# Declared after the chown so that a fresh named volume is created owned by the user.
VOLUME /data/artifacts
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]

ENTRYPOINT ["python", "-m", "service"]
