# The restyle Slack bot: lean install (no torch), non-root, models on SageMaker.  See docs/operate.md.
#   docker build -t restyle-bot .
#   docker run --rm -e SLACK_BOT_TOKEN=xoxb-… -e SLACK_APP_TOKEN=xapp-… -e AWS_REGION=eu-west-1 restyle-bot
#   docker run --rm -p 3000:3000 -e SLACK_BOT_TOKEN=… -e SLACK_SIGNING_SECRET=… restyle-bot --http --port 3000
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY model ./model
COPY deploy ./deploy
# no extras: the Slack bot, the terminal client and the SageMaker backend; no torch, diffusers or transformers
RUN python -m venv /opt/restyle && /opt/restyle/bin/pip install . \
    && ! /opt/restyle/bin/python -c "import torch" 2>/dev/null

FROM python:3.11-slim
COPY --from=build /opt/restyle /opt/restyle
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/restyle restyle \
    && mkdir -p /data && chown restyle:restyle /data
USER 10001:10001
WORKDIR /home/restyle
# RESTYLE_DATA_DIR: mount a volume there to keep sessions across restarts (docs/operate.md).
# RESTYLE_HEALTH_PORT: /healthz for the HEALTHCHECK below, in Socket Mode and HTTP mode alike.
ENV PATH=/opt/restyle/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RESTYLE_BACKEND=sagemaker \
    RESTYLE_DATA_DIR=/data \
    RESTYLE_HEALTH_PORT=8080
VOLUME ["/data"]
EXPOSE 3000 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "bot.health"]
# SIGTERM drains (RESTYLE_DRAIN_S, default 30 s): give the container a longer stop timeout than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["restyle", "slack", "--host", "0.0.0.0"]
CMD []
