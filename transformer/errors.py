"""Re-export of the shared typed errors (see :mod:`yolo_contract.errors`)."""

from yolo_contract.errors import *  # noqa: F401,F403
from yolo_contract.errors import __all__  # noqa: F401
