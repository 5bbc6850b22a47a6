# One image for the API and the Linux worker (MLX's CPU build). Macs run workers natively.
FROM python:3.12-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY mlxq_cli.py ./
RUN pip install --no-cache-dir --no-deps .
ENV MLXQ_CACHE_DIR=/cache
