"""`python -m stedi.app`: the STEDI web app on 127.0.0.1:STEDI_APP_PORT (default 4567)."""

import logging

import uvicorn

from stedi.app.web import create_app
from stedi.config import Settings

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
logging.getLogger("kafka").setLevel(logging.WARNING)
settings = Settings()
# Forwarded headers name the client only when they come from the proxy the operator named.
uvicorn.run(
    create_app(settings),
    host=settings.app_host,
    port=settings.app_port,
    log_level="info",
    proxy_headers=bool(settings.trusted_proxy),
    forwarded_allow_ips=settings.trusted_proxy or None,
)
