"""``tunesmith board``: a local web app over a folder of run directories.

Server-rendered pages (FastAPI + uvicorn, already serve's dependencies) and a little bundled
JavaScript (no CDN: the pages work offline). Each part is a router module with
``router(ctx) -> APIRouter``: ``runs_pages`` (runs list, one run, compare), ``guide_pages``,
``playground`` (side-by-side streamed replies on the decoding engine) and ``launch`` (start, stop
and resume a recipe as a subprocess). ``app.create_app`` puts them together behind the token
check; ``context.BoardContext`` confines every path the browser names to the runs folder.
"""
