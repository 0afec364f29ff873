"""The OCI image, built without Docker from the Dockerfile's facts (``python -m image build``)."""
