# txcoord: the coordinator (txc serve) and, in the same image, the example services of
# chaos/txcoord_chaos/workload (docker-compose.yml runs both). Configuration by environment:
# every txc serve flag --flag-name is also TXC_FLAG_NAME.
#
# Two stages: the build stage compiles the wheels (asyncpg has C code on some platforms);
# the final one holds the installed packages and no compiler, and runs as a user with no
# rights on them.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY coordinator ./coordinator
COPY chaos ./chaos
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home txc
USER txc
ENV PYTHONUNBUFFERED=1 \
    TXC_LISTEN=0.0.0.0:7070
EXPOSE 7070 9464
# SERVING from the gRPC health service, which turns NOT_SERVING as a stop begins.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "coordinator.server.healthcheck"]
CMD ["txc", "serve"]
