"""HTTP routes: thin translations between JSON and the application layer, one module per resource.

`ROUTERS` is what the app mounts; a new resource is a new module here and one entry below.
"""

from service.api.routes import collections, health, jobs, models, sessions, upgrades

ROUTERS = [health.router, models.router, collections.router, upgrades.router, jobs.router, sessions.router]
