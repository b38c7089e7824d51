# The worker image (qmill-worker): the JetStream consumer with qiskit-aer. Scale it by
# running more containers (compose: `--scale worker=N`); each runs `qmill-worker`.
#
# Built from the repository root:
#   docker build -f infra/docker/worker.Dockerfile -t qmill-worker:0.1.0 .

# --- build: a virtualenv with the dependencies and the [worker] extra, then qmill itself --------
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# No pip or setuptools inside the virtualenv: the base image's pip installs into it.
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
# The dependency layer comes from pyproject.toml and requirements.lock alone, so it is
# rebuilt only when the dependencies change, not when the source does; the lock holds it
# to the exact versions the tests ran against. Wheels only (qiskit-aer's bundles its
# OpenMP and BLAS libraries): no compiler is needed or present in either stage.
COPY pyproject.toml requirements.lock infra/docker/requirements.py ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py worker > requirements.txt \
    && python -m pip --python /opt/venv/bin/python install --only-binary=:all: \
       --requirement requirements.txt
COPY README.md ./
COPY src/ src/
COPY worker/ worker/
# The lock pins only what it names: fail the build unless the virtualenv holds exactly
# the lock's versions (a dependency the lock lacks would have floated to its newest) and
# every installed requirement is met.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip --python /opt/venv/bin/python install --no-deps . \
    && python requirements.py --verify /opt/venv \
    && python -m pip --python /opt/venv/bin/python check

# --- runtime: the virtualenv only, run as an unprivileged user ----------------------------------
FROM python:3.11.14-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Nothing is installed at run time: drop the base image's installer too.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && groupadd --system --gid 10001 qmill \
    && useradd --system --uid 10001 --gid qmill --create-home --home-dir /home/qmill \
       --shell /usr/sbin/nologin qmill
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# SIGTERM (compose's stop signal) lets running tasks finish within the grace period.
CMD ["qmill-worker"]
