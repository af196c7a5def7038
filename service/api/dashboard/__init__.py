"""Admin dashboard (server-rendered pages at /dashboard, static files at /dashboard/static)."""
