# The image every HTTP function runs from (qmill-functions): compose starts it once per
# function, each with its own `functions-framework --target/--source` (infra/compose.yaml).
#
# Built from the repository root:
#   docker build -f infra/docker/functions.Dockerfile -t qmill-functions:0.1.0 .

# --- build: a virtualenv with the dependencies, then qmill itself ------------------------------
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# No pip or setuptools inside the virtualenv: the base image's pip installs into it.
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
# The dependency layer comes from pyproject.toml and requirements.lock alone, so it is
# rebuilt only when the dependencies change, not when the source does; the lock holds it
# to the exact versions the tests ran against. Wheels only: no compiler is needed or
# present in either stage.
COPY pyproject.toml requirements.lock infra/docker/requirements.py ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py server > requirements.txt \
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

# --- runtime: the virtualenv and the functions' sources, run as an unprivileged user ------------
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
# Not a package: functions-framework loads each main.py by path (--source).
COPY functions/ /app/functions/
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# compose and Terraform pass each function's own command; this default serves GET /health.
CMD ["functions-framework", "--asgi", "--target", "health", \
     "--source", "/app/functions/health/main.py", "--host", "0.0.0.0", "--port", "8080"]
