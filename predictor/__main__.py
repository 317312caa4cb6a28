"""``python -m predictor``: args -> logging -> models (one, or a repository) loaded -> KServe ModelServer."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from predictor.settings import parse_settings

    settings = parse_settings(argv)

    from yolo_contract.serving import HttpLimits, configure_logging, serve

    configure_logging(settings.log_config_file, json_logs=settings.json_logs, verbose=settings.verbose)
    log = logging.getLogger("predictor")

    def serve_models(models: list, configure=None) -> None:
        serve(
            models,
            "predictor",
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            enable_grpc=settings.enable_grpc,
            grace_period=settings.grace_period,
            limits=HttpLimits(max_body_bytes=settings.max_body_bytes),
            grpc_max_message_bytes=settings.max_body_bytes,
            configure=configure,
            http_host=settings.http_host,
            grpc_host=settings.grpc_host,
        )

    if settings.ray_replicas:
        from predictor.ray_serving import serve_with_ray

        return serve_with_ray(settings, lambda model: serve_models([model]))

    from predictor.darknet import ModelFormatError
    from predictor.model import DarknetPredictor
    from predictor.repository import discover

    try:
        repo = discover(settings.model_dir, settings.model_name, settings.default_model)
        if settings.model_version and len(repo.models) > 1:
            raise ModelFormatError(f"{settings.model_dir}: --model_version applies to one model; a repository's "
                                   "versions come from each model's files")
        models = [DarknetPredictor(settings, name, files, repo.names) for name, files in repo.models.items()]
        for model in models:  # all or nothing: a broken model in a repository is never half-served
            model.load()
    except ModelFormatError as e:
        log.error("model load failed: %s", e)
        return 1
    except Exception as e:  # engine/runtime failures: still one clear line, never ready
        log.error("model load failed: %s: %s", type(e).__name__, e)
        return 1
    by_name = {m.name: m for m in models}

    def register_aliases(server) -> None:
        for alias, target in repo.aliases.items():
            log.info("serving %r as an alias of %r", alias, target)
            server.register_model(by_name[target], name=alias)

    serve_models(models, configure=register_aliases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
