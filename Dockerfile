# The STEDI image: the web app (python -m stedi.app) and the Redis source
# (python -m stedi.redis_source). Python dependencies are exactly pyproject.toml's
# runtime pins (no pyspark: the Spark containers bring their own).

# chart.js from the npm registry, at the version package-lock.json pins.
FROM node:20-bookworm-slim AS assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STEDI_CHART_JS=/opt/stedi/assets/chart.umd.min.js \
    STEDI_APP_HOST=0.0.0.0 \
    STEDI_REDIS_SOURCE_STATE=/var/lib/stedi/redis-source.json
RUN useradd --create-home --uid 10001 stedi \
    && mkdir -p /var/lib/stedi \
    && chown stedi:stedi /var/lib/stedi
WORKDIR /opt/stedi
COPY pyproject.toml README.md ./
COPY stedi ./stedi
RUN pip install . && rm -rf build
COPY --from=assets /assets/node_modules/chart.js/dist/chart.umd.min.js /opt/stedi/assets/
USER 10001:10001
EXPOSE 4567
CMD ["python", "-m", "stedi.app"]
