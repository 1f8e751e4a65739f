# The router's image: every role is `router <command>` (docker-compose.yml, deploy/kubernetes).
# It runs as uid 10001 and writes only to /state (ROUTER_STATE_DIR: dedup stores and faust's
# data directory); the rest of the filesystem may be read-only.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY router router
COPY destinations destinations
RUN pip install --no-cache-dir . \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin router \
    && mkdir /state && chown router:router /state
USER 10001:10001
ENV ROUTER_CONFIG=/etc/router/workspace.yaml \
    ROUTER_STATE_DIR=/state
EXPOSE 8080 9300
ENTRYPOINT ["router"]
