# SURM Explorer, CPU image: serves the app on 0.0.0.0:7860.
#   docker build -t surm-explorer .  &&  docker run -p 7860:7860 -e SURM_AUTH=you:secret surm-explorer
# Reachable from other machines, it asks for that password (without SURM_AUTH it warns what it
# exposes); add -v "$PWD/runs:/app/runs" to keep the runs when the container goes.
# For CUDA, build FROM an nvidia/cuda runtime image with Python 3.11 instead (torch 2.13.0's
# Linux wheel from PyPI already carries CUDA) and run with `docker run --gpus all -p 7860:7860 ...`.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Inside a container the app must listen on all interfaces to be reachable; outside it defaults to
# 127.0.0.1. Runs belong to the browser that started them (SURM_SHARED_RUNS=1: one table for all).
ENV SURM_HOST=0.0.0.0 HF_HUB_OFFLINE=1
EXPOSE 7860
CMD ["python", "app.py"]
