"""The FastAPI app that ``airflow api-server`` mounts at ``/neo``: ``/api`` (:mod:`.routes`),
``/ui/`` (the page) and ``/ui/static/`` (its script and style). Errors of the hooks and of the
query map to HTTP statuses here, once, with the exception's message as ``detail``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from airflow_neo.core.exceptions import (
    CompilationJobNotFound,
    CompilationJobStateError,
    InvalidCompilationRequest,
    NeoError,
)
from airflow_neo.ui.jobs import StopRefused
from airflow_neo.ui.routes import router

STATIC_DIR = Path(__file__).parent / "static"
#: exception class -> HTTP status (the most specific class of an exception wins)
ERROR_STATUS: dict[type[Exception], int] = {
    InvalidCompilationRequest: 400,
    ValueError: 400,
    CompilationJobNotFound: 404,
    StopRefused: 403,
    CompilationJobStateError: 409,
    NeoError: 502,  # the service or the job store failed
}
NO_CACHE = {"Cache-Control": "no-cache"}


def create_app() -> FastAPI:
    app = FastAPI(title="airflow-neo: compilation jobs", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redoc_url=None)
    app.include_router(router, prefix="/api")
    for error_class, code in ERROR_STATUS.items():
        app.add_exception_handler(error_class, _handler(code))
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/ui/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)

    @app.get("/ui", include_in_schema=False)
    def page_slash(request: Request) -> RedirectResponse:
        return RedirectResponse(str(request.url.replace(path=request.url.path + "/")))

    return app


def _handler(code: int):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        message = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
        return JSONResponse({"detail": message}, status_code=code)

    return handle
