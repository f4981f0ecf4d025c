# The PGM's container image: `pgm serve` on a slim Python, as a non-root user, with only the runtime lock.
#
#   docker build -t pgm .
#   docker run -p 3000:3000 -e PGM_DATABASE_URL=postgresql://pgm:secret@db/pgm pgm
#
# No container can be built where this project is developed, so tests/deploy/test_image.py runs this file's
# build steps (WORKDIR, COPY, ENV and RUN of the build stage) in a clean virtual environment, then starts
# the runtime stage's ENTRYPOINT and CMD with its ENV and runs its HEALTHCHECK (docs/deploying.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: a virtual environment in /opt/pgm with the runtime lock and the project, no build tools left over.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/pgm
# The lock first: the dependency layer is rebuilt only when the lock changes, not on every code change.
COPY requirements/runtime.txt requirements/runtime.txt
RUN /opt/pgm/bin/python -m pip install --no-deps --only-binary=:all: -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src src
RUN /opt/pgm/bin/python -m pip install --no-deps .

# Runtime stage: the same base, the virtual environment copied in, nothing else.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 pgm \
    && useradd --system --uid 10001 --gid pgm --home-dir /var/lib/pgm --create-home --shell /usr/sbin/nologin pgm
COPY --from=build /opt/pgm /opt/pgm
ENV PATH=/opt/pgm/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HTTP_PORT=3000 PGM_DATABASE_URL=sqlite:////var/lib/pgm/pgm.sqlite3
WORKDIR /var/lib/pgm
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "pgm.healthcheck"]
ENTRYPOINT ["pgm"]
CMD ["serve"]
