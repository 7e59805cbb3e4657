# syntax=docker/dockerfile:1
# The netpol-guard image: the webhook server and the CLI, nothing else.
#
#   docker build -t netpol-guard:0.1.0 .
#
# Stage 1 builds wheels for netpol-guard and every dependency; stage 2 installs only
# those wheels (no index, no compiler) and runs as a numeric non-root user, which is
# what the chart's restricted securityContext (runAsUser 65532) expects.
# The base is pinned to an exact Python release; bump both FROM lines together.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md LICENSE ./
COPY webhook ./webhook
RUN pip wheel --wheel-dir /wheels .


FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp
# Install from the wheels of stage 1 only, bind-mounted so they never become a layer.
# The version must be the one in pyproject.toml (tests/test_dockerfile.py checks it).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels netpol-guard==0.1.0 \
 && groupadd --system --gid 65532 netpol-guard \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin netpol-guard
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["netpol-guard"]
CMD ["serve"]
