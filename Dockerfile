# One image for the API and the Linux worker (MLX's CPU build). Macs run workers natively.
# tests/test_deployment_files.py checks that every path copied here exists and that each of
# the packages pyproject.toml ships is copied; .dockerignore keeps the build context small.
FROM python:3.12-slim
# OpenBLAS: workers load it for fast CPU matmuls (worker/cpu_backend.py), as scripts/setup.sh
# installs it on Debian/Ubuntu.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The locked dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
# pyproject.toml names README.md as the package's readme: the build needs both.
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY mlxq_cli ./mlxq_cli
RUN pip install --no-cache-dir --no-deps .
ENV MLXQ_CACHE_DIR=/cache
