# syntax=docker/dockerfile:1
# One image for both components: `hiphops operator` and `hiphops gateway` (the Helm chart's
# args). Build from the repository root: docker build -t hiphops-k8s:dev .
#
# The base is pinned by tag; both stages use the same one so that the wheels built in the first
# stage fit the interpreter of the second.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets in only what the wheel is built from (pyproject.toml, README.md, sources).
COPY . .
# The project's wheel and a wheel of every dependency its pyproject.toml declares: the final
# stage installs from these alone, so its dependencies are exactly the wheel's.
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="hiphops-k8s" \
      org.opencontainers.image.description="Hiphops operator and webhook gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Install the project's wheel offline from the first stage's wheels, then remove the installer:
# nothing in the final image can build or fetch packages.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels hiphops-k8s \
    && python -m pip uninstall --yes pip setuptools wheel
# A numeric non-root user (no /etc/passwd entry needed), as the chart's securityContext expects.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["hiphops"]
CMD ["--help"]
