"""What every handler of the app uses from a request: its body, its client, its page.

Pages are Jinja2 templates (autoescaped); each carries the session's CSRF token, which
`stedi.app.auth` checks on every POST. Errors are a message, never a stack trace.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates

from stedi.app import validation

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on its first page: every form and API call sends it."""
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


def page(request: Request, name: str, status_code: int = 200, **context) -> Response:
    context.update(user=getattr(request.state, "user", None), csrf=csrf_token(request))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, status_code: int, message: str) -> Response:
    if is_api(request) or request.url.path == "/health":
        return JSONResponse({"error": message}, status_code=status_code)
    return page(request, "error.html", status_code, error=message)


def require_type(request: Request, content_type: str) -> None:
    found = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if found != content_type:
        raise HTTPException(415, f"Send the body as {content_type}.")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form (the app's forms have no files), at most 20."""
    require_type(request, "application/x-www-form-urlencoded")
    return dict(await request.form(max_files=0, max_fields=20))


async def json_body(request: Request) -> dict:
    require_type(request, "application/json")
    return validation.json_object(await request.body())


def client_address(request: Request) -> str:
    """The socket's peer; uvicorn puts X-Forwarded-For's there only when the peer is
    STEDI_TRUSTED_PROXY (see __main__), so a client cannot make an address up."""
    return request.client.host if request.client else "unknown"
