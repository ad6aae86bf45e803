# The gateway alone, configured by environment to reach vLLM servers:
#   docker build -t ttc-server .
#   docker run -p 8000:8000 -e TTC_VLLM_URL=http://vllm:8000 ttc-server
# The embedded CPU model is a development default and is not in this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY strategies ./strategies
COPY verifiers ./verifiers
COPY backends ./backends
RUN pip install . && useradd --system --uid 10001 ttc

ENV TTC_HOST=0.0.0.0 \
    TTC_PORT=8000 \
    TTC_BACKEND=vllm
USER ttc
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1
CMD ["ttc-server"]
