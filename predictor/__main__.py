"""``python -m predictor``: args -> logging -> YoloV3Predictor.load() -> KServe ModelServer."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from predictor.settings import parse_settings

    settings = parse_settings(argv)

    from yolo_contract.serving import HttpLimits, configure_logging, serve

    configure_logging(settings.log_config_file, json_logs=settings.json_logs)
    log = logging.getLogger("predictor")

    def serve_model(model) -> None:
        serve(
            model,
            "predictor",
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            enable_grpc=settings.enable_grpc,
            grace_period=settings.grace_period,
            limits=HttpLimits(max_body_bytes=settings.max_body_bytes),
            grpc_max_message_bytes=settings.max_body_bytes,
        )

    if settings.ray_replicas:
        from predictor.ray_serving import serve_with_ray

        return serve_with_ray(settings, serve_model)

    from predictor.darknet import ModelFormatError
    from predictor.model import YoloV3Predictor

    model = YoloV3Predictor(settings)
    try:
        model.load()
    except ModelFormatError as e:
        log.error("model load failed: %s", e)
        return 1
    except Exception as e:  # engine/runtime failures: still one clear line, never ready
        log.error("model load failed: %s: %s", type(e).__name__, e)
        return 1
    serve_model(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
