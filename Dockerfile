# syntax=docker/dockerfile:1
#
# One image for both processes:
#   API:    uvicorn api.main:app --host 0.0.0.0 --port 8000   (the default CMD)
#   worker: arq jobs.worker.WorkerSettings                     (metrics on :9100)
# Both refuse to start without SECRETS_KEY (openssl rand -base64 32), unless given
# ENVIRONMENT=development: nothing here sets either, so a deployment must.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN groupadd --system --gid 10001 longrun \
    && useradd --system --uid 10001 --gid longrun --create-home --home-dir /home/longrun \
        --shell /usr/sbin/nologin longrun

WORKDIR /app

# Dependencies first, from the runtime lock: exact versions, every file checked against its
# hash. This layer, the slow one, is rebuilt only when requirements.lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# Then the code: this layer is cheap. The project goes in without dependencies (all are
# above) and is built by the locked setuptools (--no-build-isolation): nothing unpinned is
# fetched.
COPY pyproject.toml README.md ./
COPY api/ api/
COPY jobs/ jobs/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info

# The code stays owned by root: the service user can read it, not change it.
USER longrun

EXPOSE 8000 9100

CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
