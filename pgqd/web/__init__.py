"""The browser dashboard (``pgqd web``): server-rendered pages on Starlette, with Jinja2 templates and a small
script of its own for live updates. Needs the ``web`` extra; the core install does not import it."""
