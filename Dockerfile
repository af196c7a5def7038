# nobackfill service image (CPU FAISS). For GPU hosts, build FROM an nvidia/cuda base and install
# faiss-gpu instead of faiss-cpu; the service picks the GPU at run time (NOBACKFILL_DEVICE=auto).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NOBACKFILL_HOST=0.0.0.0 \
    NOBACKFILL_PORT=8000 \
    NOBACKFILL_DATA_DIR=/data

WORKDIR /app
# pg_dump / pg_restore for `nobackfill backup` and `restore` against PostgreSQL.
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY index ./index
COPY adapters ./adapters
COPY migrations ./migrations
# The CPU build of torch: the default index would pull several GB of CUDA libraries.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install .

RUN useradd --create-home --uid 1000 nobackfill && mkdir -p /data && chown nobackfill /data
USER nobackfill
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["nobackfill", "serve"]
