FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY router router
COPY destinations destinations
RUN pip install --no-cache-dir . && useradd --uid 10001 router && mkdir /state && chown router /state
USER router
ENV ROUTER_CONFIG=/etc/router/workspace.yaml
EXPOSE 8080 9300
ENTRYPOINT ["router"]
