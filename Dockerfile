# One image for every role: dask scheduler/worker, trainer, retrainer and API.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY cluster cluster
COPY etl etl
COPY models models
COPY hybrid hybrid
COPY graphql_api graphql_api
COPY schema.graphql ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 && pip install .
RUN mkdir -p /tmp/prometheus
EXPOSE 8000 8786 8787
CMD ["hybridrec", "--help"]
