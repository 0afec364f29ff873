# One image for both processes: the operator (`mta-operator`, the chart sets it as command) and the MTA
# pods it runs (`mta-relay`, the entrypoint: the operator's relay container passes only arguments).
# Build: docker build -t mta-operator:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/runtime.txt requirements/
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY mta/ mta/
# The dependencies at the locked versions, each file checked against its hash (`make lock` writes the lock;
# the tests' venv takes the same versions), then a non-editable install of this pyproject without them.
RUN python -m venv /opt/mta \
 && /opt/mta/bin/pip install --require-hashes -r requirements/runtime.txt \
 && /opt/mta/bin/pip install --no-deps . \
 && /opt/mta/bin/python -m compileall -q /opt/mta

FROM python:3.11-slim
# Numeric UID/GID so runAsNonRoot can verify them without reading /etc/passwd.
RUN groupadd --system --gid 10001 mta \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mta
COPY --from=build /opt/mta /opt/mta
# Bytecode was compiled at build time: nothing writes to the (read-only) root filesystem at run time;
# the pods mount an emptyDir on /tmp for what must be written.
ENV PATH=/opt/mta/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
USER 10001:10001
ENTRYPOINT ["mta-relay"]
