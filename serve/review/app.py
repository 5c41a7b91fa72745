"""The review app: server-rendered pages (FastAPI + Jinja2, plain forms, no JavaScript build) and a JSON API.

Pages: `GET /login` and `POST /login` (form field `key`: a signed, HttpOnly, SameSite=strict
session cookie, then a redirect to `/`), `/` (the queue, filters as query parameters, with
progress), `/artworks/{id}` (the image, each dimension's score, distribution and interval,
the feedback, a form to set levels, edit the feedback or confirm as is), `/images/{id}`, `/report` (the run's
report, each card linking to its artwork page).
Every form carries a CSRF token bound to the session; a POST without it is 403.
API: `GET /api/queue`, `GET /api/artworks/{id}`, `POST /api/artworks/{id}/review` with a
reviewer key as bearer token (no cookie, no CSRF). Pages and API call the same
`ReviewService`. Without reviewer keys the app serves loopback only, every save made by
"local" (`kidsart review serve` refuses another address). Everything from the run
(folders, CSV cells, feedback) is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.middleware.sessions import SessionMiddleware

from adapters.errors import InputError, KidsArtError
from serve.errors import RequestValidationFailed, UnauthorizedError, error_body, status_for
from serve.review.keys import ReviewerKeys
from serve.review.run import media_type
from serve.review.service import ReviewRequest, ReviewService
from serve.review.store import ReviewConflict

log = logging.getLogger(__name__)

LOCAL_REVIEWER = "local"
SESSION_MAX_AGE_S = 12 * 3600


class CsrfError(KidsArtError):
    kind = "csrf_token_missing"


def _templates():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("serve.review", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )


def build_review_app(service: ReviewService, keys: ReviewerKeys, secret: str | None = None) -> FastAPI:
    app = FastAPI(title="kidsart review", docs_url=None, redoc_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret or secrets.token_urlsafe(32),
        same_site="strict",
        https_only=False,
        max_age=SESSION_MAX_AGE_S,
    )
    templates = _templates()

    def page(name: str, request: Request, status: int = 200, **context) -> HTMLResponse:
        context.setdefault("reviewer", request.session.get("reviewer"))
        context.setdefault("csrf", request.session.get("csrf", ""))
        context.setdefault("open_without_keys", not keys)
        return HTMLResponse(templates.get_template(name).render(**context), status_code=status)

    def api_reviewer(request: Request) -> str:
        if not keys:
            return LOCAL_REVIEWER
        name = keys.from_header(request.headers.get("authorization"))
        if name is None:
            raise UnauthorizedError("a reviewer key is needed: Authorization: Bearer <key>")
        return name

    def page_reviewer(request: Request) -> str | None:
        if not keys:
            request.session.setdefault("csrf", secrets.token_urlsafe(24))
            request.session["reviewer"] = LOCAL_REVIEWER
        return request.session.get("reviewer")

    def check_csrf(request: Request, form) -> None:
        sent, expected = form.get("csrf", ""), request.session.get("csrf", "")
        if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
            raise CsrfError("the form's CSRF token is missing or stale: reload the page and send it again")

    @app.exception_handler(KidsArtError)
    async def _typed(request: Request, exc: KidsArtError):
        status = 403 if isinstance(exc, CsrfError) else status_for(exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse(error_body(exc), status_code=status)
        return page("error.html.j2", request, status=status, message=str(exc), status_code=status)

    # ---- the JSON API --------------------------------------------------------------------------------

    @app.get("/api/queue")
    async def api_queue(request: Request):
        api_reviewer(request)
        items = service.queue(**dict(request.query_params))
        return {"items": items, **service.progress(items)}

    @app.get("/api/artworks/{artwork_id}")
    async def api_artwork(request: Request, artwork_id: str):
        api_reviewer(request)
        return service.artwork(artwork_id)

    @app.post("/api/artworks/{artwork_id}/review")
    async def api_review(request: Request, artwork_id: str):
        reviewer = api_reviewer(request)
        try:
            body = ReviewRequest.model_validate(await request.json())
        except ValueError as exc:  # invalid JSON or a ValidationError
            raise RequestValidationFailed(f"the review body is not valid: {exc}") from exc
        try:
            state = service.save(artwork_id, reviewer, body)
        except ReviewConflict as conflict:
            return JSONResponse({**error_body(conflict), "current": conflict.current.model_dump()}, status_code=409)
        return {"version": state.version, "review": state.model_dump()}

    # ---- pages -----------------------------------------------------------------------------------------

    @app.get("/login")
    async def login_page(request: Request):
        return page("login.html.j2", request, failed=False)

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        key = form.get("key")
        name = keys.reviewer(key if isinstance(key, str) else None) if keys else LOCAL_REVIEWER
        if name is None:
            return page("login.html.j2", request, status=401, failed=True)
        request.session.clear()
        request.session.update(reviewer=name, csrf=secrets.token_urlsafe(24))
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request):
        form = await request.form()
        check_csrf(request, form)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/")
    async def queue_page(request: Request):
        if page_reviewer(request) is None:
            return RedirectResponse("/login", status_code=303)
        filters = {k: v for k, v in request.query_params.items() if v}
        items = service.queue(**filters)
        return page(
            "queue.html.j2",
            request,
            items=items,
            progress=service.progress(items),
            filters=filters,
            choices=service.run.choices(),
        )

    @app.get("/artworks/{artwork_id}")
    async def artwork_page(request: Request, artwork_id: str):
        if page_reviewer(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("artwork.html.j2", request, art=service.artwork(artwork_id), conflict=None, saved=False)

    @app.post("/artworks/{artwork_id}")
    async def artwork_save(request: Request, artwork_id: str):
        reviewer = page_reviewer(request)
        if reviewer is None:
            return RedirectResponse("/login", status_code=303)
        form = await request.form()
        check_csrf(request, form)
        try:
            body = ReviewRequest(
                levels={k.removeprefix("level_"): int(v) for k, v in form.items() if k.startswith("level_") and v},
                feedback=form.get("feedback") if form.get("feedback_edited") == "1" else None,
                confirm=form.get("confirm") == "1",
                seen_version=int(form.get("seen_version", "-1")),
            )
        except (ValueError, ValidationError) as exc:
            raise InputError(f"the form is not valid: {exc}") from exc
        try:
            service.save(artwork_id, reviewer, body)
        except ReviewConflict as conflict:
            art = service.artwork(artwork_id)
            return page("artwork.html.j2", request, status=409, art=art, conflict=str(conflict), saved=False)
        return page("artwork.html.j2", request, art=service.artwork(artwork_id), conflict=None, saved=True)

    @app.get("/report")
    async def report(request: Request):
        if page_reviewer(request) is None:
            return RedirectResponse("/login", status_code=303)
        import asyncio

        return HTMLResponse(await asyncio.to_thread(service.run.report))  # rendered once: plots take seconds

    @app.get("/images/{artwork_id}")
    async def image(request: Request, artwork_id: str):
        if page_reviewer(request) is None and keys.from_header(request.headers.get("authorization")) is None:
            raise UnauthorizedError("log in to see the artworks")
        data = service.run.image(artwork_id)
        return Response(data, media_type=media_type(data), headers={"Cache-Control": "private, max-age=3600"})

    return app
