# Worker container for Dataflow, Flink and Spark (portable runners): Beam's own Python SDK
# image, with TensorFlow and this project installed, so workers start without pip installs.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/tv/worker:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/tv/worker:0.1.0
#   tv-extract ... --runner=DataflowRunner --sdk_container_image=REGION-docker.pkg.dev/PROJECT/tv/worker:0.1.0
#
# The Beam version of the image must equal the one that submits the job (setup.py pins
# apache-beam 2.77.x); see docs/runners.md. Not built in our CI (no Docker engine there).
FROM apache/beam_python3.11_sdk:2.77.0

# The embedded backbone's weights and other caches land here rather than in $HOME.
ENV TV_CACHE_DIR=/opt/transfer-values/cache \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/transfer-values/src
COPY setup.py README.md ./
COPY schemas ./schemas
COPY beam_jobs ./beam_jobs
COPY trainer ./trainer

# setup.py's REQUIRED pins TensorFlow 2.21, TFT 1.21 and apache-beam 2.77 (already in the
# image, so pip keeps it). A non-editable install: workers import the packages from
# site-packages, exactly as --setup_file would install them.
RUN pip install . \
    && python -c "import apache_beam, tensorflow, tensorflow_transform, beam_jobs, trainer, schemas; \
assert apache_beam.__version__.startswith('2.77'), apache_beam.__version__"

# Bake the default backbone into the image so no worker converts the weights at start-up.
RUN python -c "from beam_jobs import backbones; backbones.load('efficientnet_lite0')"

# The SDK image's entry point (/opt/apache/beam/boot) stays: the runner starts workers with it.
