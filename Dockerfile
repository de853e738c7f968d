# rankflow worker / API image (for docker-compose.yml). The dev stack needs no Docker.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["rankflow"]
CMD ["worker"]
