# gga-serve container image.
#
#   docker build -t gga-serve .                                  # CPU torch (default)
#   docker build -t gga-serve:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .  # CUDA torch
#
# The shipped model repository (models/zoo) is package data, so it is baked into the image;
# mount another repository at /models and set GGA_REPO=/models to serve it instead.

# Pinned to a patch release; pin the digest too (python:3.11.11-slim-bookworm@sha256:...) in a
# registry-mirrored production build.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: resolve and install everything into a virtual environment ----
FROM ${PYTHON_IMAGE} AS build

# CPU wheels by default; a CUDA wheel index (…/whl/cu128 etc.) gives the CUDA variant, whose
# wheels carry their CUDA runtime, so the runtime stage needs no CUDA base image (only the
# NVIDIA container toolkit on the host).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# Optional extras of the project, e.g. "ray" for the KubeRay image (deploy/kuberay/).
ARG EXTRAS=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first and alone, from its own index: resolved through PyPI it would be the multi-GB
# CUDA build. The project install below then finds it already satisfied.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY models ./models
COPY detectors ./detectors
COPY service ./service
COPY gga_cli ./gga_cli
# The lab, training and attacks: the server never imports them (.importlinter), but `gga fit`
# of a user's model (docs/models.md) runs in the container too.
COPY attacks ./attacks
COPY gga_training ./gga_training
COPY gga_lab ./gga_lab
# A regular (not editable) install of the serving dependencies only (no [train]/[eval] extras),
# at the versions CI tests (constraints.txt): the code and models/zoo land in site-packages.
RUN pip install --no-cache-dir -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
    && python -c "import torch; from gga_cli import build_parser; build_parser()"
# EXTRAS=import serves imported ONNX models (`gga import`, docs/models.md): onnx from the extra,
# and onnx2torch without its declared dependencies, whose torchvision would pull a second torch.
# (torch.export and TorchScript imports need neither.)
RUN case ",${EXTRAS}," in *,import,*) \
      pip install --no-cache-dir --no-deps -c constraints.txt onnx2torch ;; esac

# ---- runtime: the virtual environment and nothing else ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="gga-serve" \
      org.opencontainers.image.description="Image classifiers served with a GGA trust score" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid so volume ownership can be prepared on the host.
RUN groupadd --system --gid 10001 gga \
    && useradd --system --uid 10001 --gid gga --home-dir /srv/gga --shell /usr/sbin/nologin gga \
    && mkdir -p /srv/gga/data /models \
    && chown -R gga:gga /srv/gga /models

COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
# The default SQLite store is a file under the working directory: keep it on a volume.
WORKDIR /srv/gga/data
VOLUME ["/srv/gga/data", "/models"]

EXPOSE 8000

# Ready means every model and its detector is loaded and warmed up, not merely "process alive".
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["gga", "serve", "--host", "0.0.0.0", "--port", "8000"]
