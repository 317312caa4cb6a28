"""``python -m transformer``: args -> logging -> ImageTransformer (describes the predictor at start) -> KServe ModelServer."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from transformer.settings import parse_settings

    settings = parse_settings(argv)

    from kserve.model import PredictorConfig

    from transformer.model import ImageTransformer
    from transformer.payload import rewrite_request
    from yolo_contract.serving import HttpLimits, configure_logging, serve

    configure_logging(settings.log_config_file, json_logs=settings.json_logs, verbose=settings.verbose)
    model = ImageTransformer(settings)
    model.load()
    serve(
        model,
        "transformer",
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        enable_grpc=settings.enable_grpc,
        grace_period=settings.grace_period,
        limits=HttpLimits(settings.max_body_bytes, settings.body_read_timeout_seconds, settings.max_inflight_bytes),
        http_host=settings.http_host,
        grpc_host=settings.grpc_host,
        grpc_max_message_bytes=settings.max_body_bytes,
        rewrite=rewrite_request,
        # the predictor's other model names are registered as they are described
        configure=lambda server: setattr(model.link, "register", server.register_model),
        # our model makes its own gRPC calls (fast reconnects, error mapping); KServe's config is
        # kept consistent for anything of KServe's that reads it
        predictor_config=PredictorConfig(
            predictor_host=settings.predictor_host,
            predictor_protocol=settings.predictor_protocol,
            predictor_request_timeout_seconds=int(settings.predictor_request_timeout_seconds),
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
